"""An endpoint whose create was answered sees every click ingest accepts after it.

Ingest stamps each click with how far its endpoint table had read (``clickhook-endpoints-at``);
the dispatcher routes the click with a table read at least that far, waiting for it a bounded
time (``ENDPOINT_TABLE_WAIT_S``). These tests make the dispatcher's table late on purpose: the
click is on ``clicks`` before the endpoint it must reach is written.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from services.dispatcher.service import ENDPOINT_TABLE_WAIT_S
from shared.model.topics import HEADER_ENDPOINTS_AT, endpoints_at
from tests.e2e.conftest import ACCOUNT_ID, ACCOUNT_TOKEN, Pipeline, StartPipeline
from tests.support.clicks import make_click
from tests.support.receiver import Receiver
from tests.support.topics import read_records

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

WAITS = "clickhook_endpoint_table_waits_total"
# Long enough for the dispatcher to have read the click and begun waiting for its table.
DISPATCHER_READ_S = 0.8


async def endpoint_offsets(pipeline: Pipeline, count: int) -> list[int]:
    records = await read_records(pipeline.bootstrap, pipeline.topic("webhook.endpoints"), count)
    return [record.offset for record in records]


async def test_a_click_stamped_past_the_table_reaches_the_endpoint_written_after_it(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    await pipeline.create_endpoint(receiver.url("/first"))
    [first_offset] = await endpoint_offsets(pipeline, 1)
    # The next write's record comes after the first's commit marker.
    stamp = first_offset + 3
    await pipeline.produce_clicks(
        [make_click("evt_fresh", account_id=ACCOUNT_ID)],
        headers=[(HEADER_ENDPOINTS_AT, str(stamp).encode())],
    )
    await asyncio.sleep(DISPATCHER_READ_S)

    await pipeline.create_endpoint(receiver.url("/second"))
    offsets = await endpoint_offsets(pipeline, 2)
    await receiver.wait_until(lambda: len(receiver.received) >= 2, timeout_s=10)

    assert offsets[1] < stamp, "the second endpoint's record is one the stamp covers"
    assert sorted(r.path for r in receiver.received) == ["/first", "/second"], pipeline.logs()
    assert await pipeline.metric("dispatcher", WAITS, outcome="reached") == 1
    assert await pipeline.metric("dispatcher", WAITS, outcome="timed_out") == 0


async def test_a_table_that_never_gets_there_delays_the_click_by_the_wait_only(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    await pipeline.create_endpoint(receiver.url("/only"))

    produced_at = time.time()
    await pipeline.produce_clicks(
        [make_click("evt_far", account_id=ACCOUNT_ID)],
        headers=[(HEADER_ENDPOINTS_AT, b"1000000000")],
    )
    [arrival] = await receiver.wait_for(1, timeout_s=ENDPOINT_TABLE_WAIT_S + 10)

    assert arrival.at_s - produced_at >= ENDPOINT_TABLE_WAIT_S
    assert await pipeline.metric("dispatcher", WAITS, outcome="timed_out") == 1


async def test_ingest_stamps_clicks_and_test_events_past_the_endpoint_it_answered_for(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    pipeline = await start_pipeline()
    endpoint = await pipeline.create_endpoint(receiver.url())
    [offset] = await endpoint_offsets(pipeline, 1)

    await pipeline.post_clicks(make_click("evt_stamped", account_id=ACCOUNT_ID))
    async with pipeline.session.post(
        f"{pipeline.ingest_url}/v1/endpoints/{endpoint['id']}/test",
        headers={"authorization": f"Bearer {ACCOUNT_TOKEN}"},
    ) as response:
        assert response.status == 202, await response.text()
    clicks = await read_records(pipeline.bootstrap, pipeline.topic("clicks"), 2)

    assert [endpoints_at(record.headers) for record in clicks] == [offset + 1, offset + 1]
    await receiver.wait_for(2, timeout_s=10)
    assert await pipeline.metric("dispatcher", WAITS, outcome="timed_out") == 0


async def test_a_stamp_that_is_not_an_offset_is_ignored_not_fatal(
    start_pipeline: StartPipeline, receiver: Receiver
) -> None:
    """A producer of the shortener's own may set the header to anything: 5,000 digits (more
    than Python converts) neither stall the partition nor delay the click."""
    pipeline = await start_pipeline()
    await pipeline.create_endpoint(receiver.url())

    await pipeline.produce_clicks(
        [make_click("evt_hostile", account_id=ACCOUNT_ID)],
        headers=[(HEADER_ENDPOINTS_AT, b"9" * 5000)],
    )
    await pipeline.produce_clicks([make_click("evt_after", account_id=ACCOUNT_ID)])
    await receiver.wait_for(2, timeout_s=10)

    assert await pipeline.metric("dispatcher", WAITS) == 0
    assert "record_handler_failed" not in pipeline.logs()
