"""Backfill's window rules and its run, on records and a producer faked in memory.

The same run against the real broker: tests/integration/test_backfill_api.py and
tests/e2e/test_backfill.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.ingest.backfill import (
    MAX_WINDOW,
    Backfill,
    BackfillProgress,
    BackfillWindow,
    Lookup,
    window_problems,
)
from shared.model.messages import Endpoint, EndpointFilters, EndpointSecret, decode_envelope
from shared.model.signing import generate_secret, webhook_id
from shared.ops.settings import load_settings
from tests.support.timed_clicks import click_at

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
SINCE, UNTIL = NOW - timedelta(hours=3), NOW - timedelta(hours=1)
INSIDE = NOW - timedelta(hours=2)
SETTINGS = load_settings({})


@dataclass
class FakeRecord:
    value: bytes | None
    topic: str = "clicks"
    partition: int = 0
    offset: int = 0


@dataclass
class FakeProducer:
    """Acknowledges every send at once and keeps what was sent."""

    sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)

    async def send(
        self, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, headers))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def endpoint(**fields: Any) -> Endpoint:
    return Endpoint(
        id="ep_1",
        account_id="acc_42",
        url="https://hooks.example.com/x",
        secrets=[EndpointSecret(generate_secret())],
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )


async def records_of(*values: bytes | None) -> AsyncGenerator[Any, None]:
    for value in values:
        yield FakeRecord(value)


def clicks(*events: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(event) for event in events]


def progress(max_clicks: int = 100) -> BackfillProgress:
    return BackfillProgress("ep_1", BackfillWindow(SINCE, UNTIL, max_clicks), started_at=NOW)


async def run(
    values: Sequence[bytes | None],
    lookup: Lookup | None = None,
    max_clicks: int = 100,
) -> tuple[BackfillProgress, FakeProducer]:
    target = endpoint()
    state = progress(max_clicks)
    producer = FakeProducer()
    backfill = Backfill(
        SETTINGS,
        producer,
        lookup or (lambda _id: target),
        state,
        records=records_of(*values),
        clock=NOW.timestamp,
    )
    await backfill.run()
    return state, producer


@pytest.mark.parametrize(
    ("since", "until", "field", "problem"),
    [
        (NOW + timedelta(seconds=1), NOW + timedelta(hours=1), "since", "is not in the past"),
        (SINCE, SINCE, "until", "must be after since"),
        (NOW - MAX_WINDOW - timedelta(seconds=1), NOW, "until", "at most 7 days"),
        (SINCE.replace(tzinfo=None), UNTIL, "since", "UTC offset"),
    ],
)
def test_window_out_of_bounds_is_named(
    since: datetime, until: datetime, field: str, problem: str
) -> None:
    [found] = window_problems(since, until, NOW)

    assert found.field == field
    assert problem in found.problem


def test_a_seven_day_window_may_run() -> None:
    assert window_problems(NOW - MAX_WINDOW, NOW, NOW) == []


async def test_only_the_windows_clicks_the_endpoint_wants_are_queued_for_it() -> None:
    state, producer = await run(
        [
            *clicks(
                click_at("evt_before", SINCE - timedelta(seconds=1)),
                click_at("evt_first", SINCE),
                click_at("evt_in", INSIDE),
                click_at("evt_at_until", UNTIL),
                click_at("evt_other_account", INSIDE, account_id="acc_7"),
            ),
            b'{"not": "a click"}',
            None,
        ]
    )

    envelopes = [decode_envelope(value) for _, _, value, _ in producer.sent]
    assert [e.event_id for e in envelopes] == ["evt_first", "evt_in"]
    assert all(e.endpoint_id == "ep_1" for e in envelopes)
    assert all(e.webhook_id == webhook_id(e.event_id, "ep_1") for e in envelopes)
    assert {topic for topic, *_ in producer.sent} == {"webhook.retry.5s"}
    assert all(key == b"ep_1" for _, key, _, _ in producer.sent)
    assert (state.state, state.scanned, state.matched, state.scheduled) == ("completed", 7, 2, 2)


async def test_changed_filters_apply_to_the_clicks_read_after_the_change() -> None:
    spring_only = endpoint(filters=EndpointFilters(tags=["spring"]))

    state, producer = await run(
        clicks(click_at("evt_spring", INSIDE), click_at("evt_autumn", INSIDE, tags=["autumn"])),
        lookup=lambda _id: spring_only,
    )

    assert [decode_envelope(v).event_id for _, _, v, _ in producer.sent] == ["evt_spring"]
    assert state.matched == 1


async def test_more_matches_than_max_clicks_stops_at_the_limit() -> None:
    state, producer = await run(
        clicks(*(click_at(f"evt_{n}", INSIDE) for n in range(3))), max_clicks=2
    )

    assert len(producer.sent) == 2
    assert state.state == "limit_reached"
    assert state.error == "more than 2 clicks match"


async def test_exactly_max_clicks_matches_completes() -> None:
    state, _ = await run(clicks(*(click_at(f"evt_{n}", INSIDE) for n in range(2))), max_clicks=2)

    assert state.state == "completed"


async def test_a_deleted_endpoint_stops_the_backfill() -> None:
    target = endpoint()
    lookups = iter([target, None])

    state, producer = await run(
        clicks(click_at("evt_1", INSIDE), click_at("evt_2", INSIDE)),
        lookup=lambda _id: next(lookups),
    )

    assert len(producer.sent) == 1
    assert (state.state, state.error) == ("stopped", "the endpoint was deleted")


async def test_cancelling_records_the_state_and_closes_the_reader() -> None:
    closed = asyncio.Event()
    started = asyncio.Event()

    async def endless() -> AsyncGenerator[Any, None]:
        try:
            yield FakeRecord(orjson.dumps(click_at("evt_1", INSIDE)))
            started.set()
            await asyncio.Event().wait()
        finally:
            closed.set()

    state = progress()
    target = endpoint()
    backfill = Backfill(
        SETTINGS,
        FakeProducer(),
        lambda _id: target,
        state,
        records=endless(),
        clock=NOW.timestamp,
    )
    task = asyncio.create_task(backfill.run())
    await started.wait()
    task.cancel()
    await asyncio.wait({task})

    assert task.cancelled()
    assert state.state == "cancelled"
    assert state.finished_at is not None
    assert closed.is_set()


async def test_a_failing_producer_ends_the_run_as_failed() -> None:
    class BrokenProducer:
        async def send(self, *args: object, **kwargs: object) -> asyncio.Future[None]:
            raise ConnectionError("broker gone")

    state = progress()
    target = endpoint()
    backfill = Backfill(
        SETTINGS,
        BrokenProducer(),
        lambda _id: target,
        state,
        records=records_of(orjson.dumps(click_at("evt_1", INSIDE))),
        clock=NOW.timestamp,
    )
    await backfill.run()

    assert state.state == "failed"
    assert state.error == "ConnectionError: broker gone"
