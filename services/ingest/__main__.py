"""python -m services.ingest: the HTTP API for clicks and endpoints."""

from __future__ import annotations

from aiohttp import web

from services.ingest.app import create_app
from shared.kafka.service_base import service_base
from shared.ops import metrics
from shared.ops.logging import configure_logging
from shared.ops.process import run, stop_on_signals
from shared.ops.settings import load_settings
from shared.ops.tracing import tracing


async def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    metrics.initialise("ingest", settings)
    async with tracing(settings, "ingest"), service_base(settings) as base:
        stop_on_signals(base.stop)
        runner = web.AppRunner(create_app(base), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.bind_host, settings.ingest_port).start()
        try:
            await base.stop.wait()
        finally:
            base.readiness.draining = True
            await runner.cleanup()


if __name__ == "__main__":
    run(main)
