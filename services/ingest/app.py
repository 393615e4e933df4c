"""The ingest service: click intake and the endpoint registry over HTTP."""

from __future__ import annotations

from aiohttp import web

from services.ingest.auth import Authenticator
from services.ingest.backfill_api import BackfillApi
from services.ingest.clicks import ClickIntake
from services.ingest.endpoints_api import EndpointApi
from services.ingest.openapi import openapi_document
from services.ingest.responses import error_middleware
from shared.health import add_ops_routes
from shared.lifecycle import stop_on_signals
from shared.logging import configure_logging
from shared.runtime import Runtime, kafka_runtime
from shared.settings import load_settings


def create_app(rt: Runtime) -> web.Application:
    settings = rt.settings
    auth = Authenticator(settings.api_keys)
    clicks = ClickIntake(settings, rt.producer, auth)
    endpoints = EndpointApi(settings, rt.endpoints, auth, rt.producer)
    backfills = BackfillApi(settings, endpoints, rt.endpoints, rt.producer)
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app.router.add_post("/v1/clicks", clicks.post_clicks)
    app.router.add_post("/v1/endpoints", endpoints.create)
    app.router.add_get("/v1/endpoints", endpoints.list)
    app.router.add_get("/v1/endpoints/{endpoint_id}", endpoints.get)
    app.router.add_patch("/v1/endpoints/{endpoint_id}", endpoints.patch)
    app.router.add_delete("/v1/endpoints/{endpoint_id}", endpoints.delete)
    app.router.add_post("/v1/endpoints/{endpoint_id}/rotate-secret", endpoints.rotate_secret)
    app.router.add_post("/v1/endpoints/{endpoint_id}/replay", endpoints.replay)
    app.router.add_post("/v1/endpoints/{endpoint_id}/backfill", backfills.start)
    app.router.add_get("/v1/endpoints/{endpoint_id}/backfill", backfills.status)
    app.router.add_delete("/v1/endpoints/{endpoint_id}/backfill", backfills.cancel)
    app.on_cleanup.append(backfills.close)
    document = openapi_document()

    async def serve_openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", serve_openapi)
    add_ops_routes(app, rt.readiness)
    return app


async def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    async with kafka_runtime(settings) as rt:
        stop_on_signals(rt.stop)
        runner = web.AppRunner(create_app(rt), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.bind_host, settings.ingest_port).start()
        try:
            await rt.stop.wait()
        finally:
            rt.readiness.draining = True
            await runner.cleanup()
