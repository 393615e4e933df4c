"""The process around a service: a stop request that survives logging, the exit status."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from shared.ops import process
from shared.ops.supervision import BackgroundTaskFailed


@pytest.fixture(name="collector_restored", autouse=True)
def fixture_collector_restored() -> Iterator[None]:
    """``process.run`` tunes the collector for the whole process: not for the rest of pytest."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


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


def test_a_service_runs_with_the_collector_tuned_and_its_start_up_objects_frozen() -> None:
    seen: list[tuple[tuple[int, int, int], int]] = []

    async def main() -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))

    process.run(main)

    [(thresholds, frozen)] = seen
    assert thresholds == process.GC_THRESHOLDS
    assert frozen > 0
