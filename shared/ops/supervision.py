"""Supervision of a service's long-running background tasks (the endpoint follower, the broker
probe, lag reporting, the attempt-log writer): none may die unnoticed.

A supervised task that ends while the service runs, by raising or by returning, fails the
service: its readiness check (named for the task) turns red at once, the service's stop event
is set so it drains exactly as on SIGTERM, and ``raise_if_failed`` then raises
``BackgroundTaskFailed``, which ``process.run`` turns into exit code 1.

Why end the process rather than restart the task in place: a task that died left its state
(a consumer's position, a half-applied batch, a client in an unknown state) behind it, and a
fresh process rebuilds all of it from the topics, the path every start already takes and the
tests cover. The orchestrator restarts the process with its own backoff (Kubernetes'
CrashLoopBackOff) and counts the restarts where operators look, where a restart loop inside the
process would keep a broken service looking alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

from shared.model.errors import ClickhookError
from shared.ops.health import Readiness

log = structlog.get_logger(__name__)


class BackgroundTaskFailed(ClickhookError):
    """A supervised task ended while its service was running."""

    def __init__(self, task: str, cause: BaseException | None) -> None:
        how = f"raised {cause!r}" if cause is not None else "returned"
        super().__init__(f"background task {task} {how}")
        self.task = task
        self.cause = cause


class Supervisor:
    """Runs named background tasks for as long as a service runs; see the module doc."""

    def __init__(self, readiness: Readiness, stop: asyncio.Event) -> None:
        self._readiness = readiness
        self._stop = stop
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failure: BackgroundTaskFailed | None = None

    def start(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as the task ``name``, with a readiness check of the same name."""
        if name in self._tasks:
            work.close()
            raise ValueError(f"a task named {name} is already supervised")
        task = asyncio.create_task(work, name=name)
        self._tasks[name] = task
        self._readiness.add(name, lambda: not task.done())
        task.add_done_callback(self._ended)
        return task

    @property
    def failure(self) -> BackgroundTaskFailed | None:
        """The first task that failed, if one did."""
        return self._failure

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def cancel(self, name: str) -> None:
        """Cancel the task ``name`` and wait for it to end, as part of an orderly stop (a
        writer stopped before its producer is flushed); not a failure. A task that failed
        before was reported then: its error is not raised again here."""
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.remove_done_callback(self._ended)
        self._readiness.remove(name)
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()

    async def close(self) -> None:
        """Cancel every task still running, newest first, and wait for each to end."""
        for name in reversed(list(self._tasks)):
            await self.cancel(name)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # A task is only cancelled by ``close`` (which removed this callback first) or by the
        # loop shutting down: neither is a failure of the task.
        if task.cancelled():
            return
        failure = BackgroundTaskFailed(task.get_name(), task.exception())
        if self._failure is None:
            self._failure = failure
        # Stop first, log after: nothing below may keep the service from stopping.
        self._stop.set()
        with contextlib.suppress(Exception):
            log.error(
                "background_task_failed",
                task=task.get_name(),
                error=repr(failure.cause),
                exc_info=failure.cause,
            )
