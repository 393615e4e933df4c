"""Process wiring common to the services: event loop, signals, ordered shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog
from aiokafka.errors import KafkaError

log = structlog.get_logger(__name__)

T = TypeVar("T")


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; the service then drains and exits 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("stop_requested", signal=sig.name)
    stop.set()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop when it is installed."""
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


HANDOFF_RETRY_FIRST_S = 0.5
HANDOFF_RETRY_MAX_S = 30.0


async def until_done(operation: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry a hand-off to Kafka until the broker takes it.

    Retrying the hand-off alone (not the whole record) keeps a broker outage from turning into
    early re-attempts at the receiver. Shutdown cancels the wait; the record is then not
    committed and is read again by whoever owns the partition next.
    """
    delay_s = HANDOFF_RETRY_FIRST_S
    while True:
        try:
            return await operation()
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("handoff_retrying", what=what, error=repr(exc), retry_in_s=delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, HANDOFF_RETRY_MAX_S)
