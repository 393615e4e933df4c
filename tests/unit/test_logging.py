"""Every line logged about a delivery carries its ids, and only that delivery's."""

from __future__ import annotations

import asyncio
import io
import sys
import types
from collections.abc import Callable, Iterator

import orjson
import pytest
import structlog

from shared.model.messages import DeliveryEnvelope
from shared.ops.logging import bind_delivery, configure_logging

Lines = Callable[[], list[dict[str, object]]]


def envelope(n: int) -> DeliveryEnvelope:
    return DeliveryEnvelope(
        webhook_id=f"msg_{n}",
        event_id=f"evt_{n}",
        endpoint_id=f"ep_{n}",
        account_id="acc_1",
        event={"id": f"evt_{n}"},
        attempts_made=0,
        tier=-1,
        due_at_ms=0,
    )


@pytest.fixture(name="lines")
def fixture_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lines]:
    """The JSON lines the services print, parsed."""
    written = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=written))
    configure_logging("json")
    yield lambda: [orjson.loads(line) for line in written.getvalue().splitlines()]
    structlog.reset_defaults()


async def test_each_delivery_task_logs_its_own_ids_and_nothing_leaks_out(lines: Lines) -> None:
    log = structlog.get_logger("test")

    async def deliver(n: int) -> None:
        bind_delivery(envelope(n))
        await asyncio.sleep(0)  # the other delivery runs in between
        log.info("attempted", n=n)

    await asyncio.gather(deliver(1), deliver(2))
    log.info("outside")

    attempted = {line["n"]: line for line in lines() if line["event"] == "attempted"}
    outside = next(line for line in lines() if line["event"] == "outside")
    for n in (1, 2):
        ids = {key: attempted[n][key] for key in ("event_id", "endpoint_id", "webhook_id")}
        assert ids == {"event_id": f"evt_{n}", "endpoint_id": f"ep_{n}", "webhook_id": f"msg_{n}"}
        assert attempted[n]["attempt"] == 1
    assert "event_id" not in outside
