"""The wait for a first share of the caps (shared/delivery/worker.py), driven past its limit on
the real broker: a member of the caps group that never gives its partitions back holds every
rebalance, so a starting dispatcher gets no share. It is not ready meanwhile, gives up
starting with ``CapsShareUnavailable`` (the process exits and its orchestrator restarts it, as
docs/operations/scaling.md says), has sent and committed nothing, and the click is delivered
by the next start once the group can form."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.dispatcher.__main__ import build_worker
from services.dispatcher.service import SERVICE
from shared.delivery.endpoint_gate import gate_for
from shared.delivery.worker import caps_share, consume, deliverer_for
from shared.kafka.service_base import ServiceBase, service_base
from shared.model.errors import CapsShareUnavailable
from shared.model.topics import CAPS_GROUP, DISPATCHER_GROUP, Topics
from shared.ops.settings import Settings
from tests.integration.conftest import ACCOUNT_A, PUBLISH, auth
from tests.support.clicks import make_click
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

Client = TestClient[Any, Any]
FIRST_SHARE_TIMEOUT_S = 1.5
DELIVERED_WITHIN_S = 20.0
# Long enough for a second delivery of the click to arrive, were there one.
QUIET_S = 1.0


class StuckMember(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Once it holds its partitions, never gives them back until released: the coordinator
    waits for it to rejoin (up to its rebalance timeout, minutes), and no newcomer is assigned
    anything meanwhile."""

    def __init__(self) -> None:
        self.assigned = asyncio.Event()
        self.released = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.assigned.is_set():
            await self.released.wait()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned.set()


@pytest.fixture(name="stuck")
async def fixture_stuck(settings: Settings, base: object) -> AsyncIterator[StuckMember]:
    """A member of the caps group holding every partition (``base`` made the topics)."""
    topics = Topics(settings.topic_prefix)
    member = StuckMember()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=topics.group(CAPS_GROUP)
    )
    await consumer.start()
    consumer.subscribe([topics.caps], listener=member)
    async with asyncio.timeout(DELIVERED_WITHIN_S):
        await member.assigned.wait()
    try:
        yield member
    finally:
        member.released.set()
        await consumer.stop()


@contextlib.asynccontextmanager
async def dispatcher(
    settings: Settings, *, first_share_timeout_s: float
) -> AsyncIterator[tuple[ServiceBase, asyncio.Task[None]]]:
    """The dispatcher as its process runs it: the base, its consume loop running; stopped
    (drained) on the way out."""
    async with (
        service_base(settings) as base,
        deliverer_for(base, SERVICE) as deliverer,
        caps_share(base, SERVICE, first_share_timeout_s=first_share_timeout_s) as membership,
    ):
        consumer, worker = build_worker(base, deliverer, gate_for(settings, membership.share))
        running = asyncio.ensure_future(consume(base, consumer, worker, membership))
        try:
            yield base, running
        finally:
            base.stop.set()
            with contextlib.suppress(CapsShareUnavailable):
                await running


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int | None]:
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=topics.group(DISPATCHER_GROUP)
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topics.clicks) or set()
        return {
            tp: await consumer.committed(tp)
            for tp in (TopicPartition(topics.clicks, p) for p in partitions)
        }
    finally:
        await consumer.stop()


async def test_no_first_share_in_time_stops_the_start_and_the_click_waits_for_the_next(
    ingest: Client, settings: Settings, receiver: Receiver, stuck: StuckMember
) -> None:
    created = await ingest.post(
        "/v1/endpoints", json={"url": receiver.url("/hook")}, headers=auth(ACCOUNT_A)
    )
    assert created.status == 201
    click = make_click("evt_caps_wait", account_id="acc_a")
    published = await ingest.post("/v1/clicks", json=click, headers=auth(PUBLISH))
    assert published.status == 202

    async with dispatcher(settings, first_share_timeout_s=FIRST_SHARE_TIMEOUT_S) as (
        base,
        running,
    ):
        await base.endpoints.loaded.wait()
        ready, checks = base.readiness.report()
        with pytest.raises(CapsShareUnavailable) as refused:
            await running
        # Let the group form before this one leaves it: leaving in the middle of a join
        # waits for the join (seconds), which only the test's time would notice.
        stuck.released.set()

    assert (ready, checks["caps_share_assigned"]) == (False, False)
    assert refused.value.timeout_s == FIRST_SHARE_TIMEOUT_S
    assert refused.value.topic == Topics(settings.topic_prefix).caps
    assert receiver.received == []
    assert set((await committed_offsets(settings)).values()) <= {None}

    # The group can form again: the next start gets a share and delivers the click, once.
    async with dispatcher(settings, first_share_timeout_s=DELIVERED_WITHIN_S) as (_, running):
        delivered = await receiver.wait_for(1, DELIVERED_WITHIN_S)
        await asyncio.sleep(QUIET_S)
    assert len(receiver.received) == 1
    assert b"evt_caps_wait" in delivered[0].body
    assert not running.done() or running.exception() is None
