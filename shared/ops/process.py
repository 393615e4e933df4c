"""A service process: its event loop, its signals, and shutdown that survives a failing client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from shared.ops.supervision import BackgroundTaskFailed

log = structlog.get_logger(__name__)

# The exit status of a service that stopped because a supervised background task failed.
EXIT_TASK_FAILED = 1
# The cyclic collector's thresholds (CPython's default: 700, 10, 10). A delivery lives for
# the length of its request, so under load a thousand of them (tasks, futures, records) are
# always alive: with the default, most young collections walked them only to promote them, and
# the oldest generation was walked every few seconds. py-spy and gc.callbacks on the dispatcher
# draining 20,000 clicks: about a sixth of its CPU went to the collector (docs/performance.md).
GC_THRESHOLDS = (5000, 20, 100)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; the service then drains and exits 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    # Stop first, log after: a line that cannot be written (stdout a closed pipe, after
    # `make up | tee` lost its tee) must never keep the service from stopping.
    stop.set()
    with contextlib.suppress(Exception):
        log.info("stop_requested", signal=sig.name)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop when it is installed; exit with ``EXIT_TASK_FAILED`` when it
    stopped because a supervised background task failed (``shared.ops.supervision``)."""
    tune_collector()
    try:
        _run_on_loop(main)
    except BackgroundTaskFailed as exc:
        with contextlib.suppress(Exception):
            log.error(  # noqa: TRY400 - the task's own traceback was logged when it failed
                "service_failed", error=str(exc), exit_status=EXIT_TASK_FAILED
            )
        raise SystemExit(EXIT_TASK_FAILED) from None


def tune_collector() -> None:
    """Raise the collector's thresholds, and move what exists before the loop starts (the
    modules and their objects, which live as long as the process) out of its reach."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()


def _run_on_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
    else:
        uvloop.run(main())


CLOSE_TIMEOUT_S = 10.0


async def close_quietly(
    what: str, closing: Awaitable[None], timeout_s: float = CLOSE_TIMEOUT_S
) -> None:
    """Shut a client down without letting its failure hide the rest of the shutdown.

    While the broker is unreachable aiokafka's ``stop()`` can wait forever to flush (the
    producer) or leak a ``CancelledError`` (the fetcher): the wait is bounded, and that error
    is swallowed unless this task itself is being cancelled.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await closing
    except TimeoutError:
        log.warning("close_timed_out", what=what, timeout_s=timeout_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("close_interrupted", what=what)
    except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever one client does
        log.warning("close_failed", what=what, error=repr(exc))
