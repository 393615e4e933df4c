"""An ingest shutdown's stop of the replay runs here (``ReplayApi._stop_runs``), without a broker:
a run that ends in an error as it is cancelled is logged, never left to asyncio's "Task
exception was never retrieved"."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from aiokafka.errors import ProducerClosed
from structlog.testing import capture_logs

from services.ingest.replay_api import ReplayApi
from shared.model.messages import ReplayJob


async def _cancelled_into(error: BaseException | None) -> ReplayJob:
    """A run that waits; cancelled, it ends in ``error`` (None: in its cancel)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if error is None:
            raise
        raise error from None
    raise AssertionError("never set")


async def test_a_run_ending_in_an_error_as_it_is_stopped_is_logged_and_retrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        api = object.__new__(ReplayApi)  # its runs alone; nothing else of it is used
        api._tasks = {
            "rp_failed": asyncio.create_task(_cancelled_into(ProducerClosed())),
            "rp_cancelled": asyncio.create_task(_cancelled_into(None)),
        }
        await asyncio.sleep(0)  # both waiting
        with capture_logs() as logs:
            await api._stop_runs()
        del api
        gc.collect()
    finally:
        loop.set_exception_handler(None)

    failed = [line for line in logs if line["event"] == "replay_run_failed_at_shutdown"]
    assert [(line["job_id"], line["log_level"]) for line in failed] == [("rp_failed", "warning")]
    assert "ProducerClosed" in failed[0]["error"]
    assert reported == []
