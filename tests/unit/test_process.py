"""The process around a service: a stop request that survives logging, the exit status."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from shared.ops import process
from shared.ops.supervision import BackgroundTaskFailed


class BrokenLog:
    """A logger whose every line fails, as it does when stdout is a closed pipe."""

    def __getattr__(self, _: str) -> Any:
        def fail(*_: Any, **__: Any) -> None:
            raise BrokenPipeError(32, "Broken pipe")

        return fail


async def test_sigterm_stops_the_service_even_when_its_log_line_cannot_be_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process, "log", BrokenLog())
    stop = asyncio.Event()
    process.stop_on_signals(stop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(5):
            await stop.wait()
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def test_a_service_stopped_by_a_failed_background_task_exits_1() -> None:
    async def main() -> None:
        raise BackgroundTaskFailed("endpoint_follower", RuntimeError("injected"))

    with pytest.raises(SystemExit) as exited:
        process.run(main)

    assert exited.value.code == process.EXIT_TASK_FAILED == 1


def test_a_service_that_stops_cleanly_returns_normally() -> None:
    async def main() -> None:
        await asyncio.sleep(0)

    process.run(main)
