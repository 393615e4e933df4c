"""The pipeline on a three-node cluster through broker crashes: 10,000 clicks posted to ingest
while one node is killed with SIGKILL and started again, then the leader of a ``clicks``
partition is. Every click is delivered or dead-lettered with a reason, every id ingest answered
202 for is in the log, and the services stay ready or recover on their own."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.kafka.clients import topic_specs
from shared.ops.settings import load_settings
from tests.e2e.cluster.support import (
    REPLICATED,
    ReadinessWatch,
    logged_click_ids,
    settle,
)
from tests.e2e.conftest import ACCOUNT_ID, Pipeline, StartPipeline
from tests.support.broker import PrivateCluster
from tests.support.clicks import make_click
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.e2e, pytest.mark.cluster]

CLICKS = 10_000
BATCH = 100
PACE_S = 0.4  # between batches: the 10,000 clicks span both faults
FIRST_FAULT_AFTER_S = 6.0
DOWN_S = 10.0
FIRST_VICTIM = 3
SETTLE_TIMEOUT_S = 120.0
PUBLISH_RETRY_S = 0.5
MIN_ISR = "min.insync.replicas"


@dataclass
class Published:
    """What ingest acknowledged (the ids of each 202) and how often a batch had to be sent
    again after a 503 or a dropped request."""

    acked: set[str] = field(default_factory=set)
    retries: int = 0
    slowest_s: float = 0.0  # the longest wait for one batch's 202, retries included


async def publish(pipeline: Pipeline, events: list[dict[str, Any]]) -> Published:
    published = Published()
    for start in range(0, len(events), BATCH):
        sent_at = time.monotonic()
        ids, failed = await pipeline.post_until_accepted(
            events[start : start + BATCH], retry_s=PUBLISH_RETRY_S
        )
        published.slowest_s = max(published.slowest_s, time.monotonic() - sent_at)
        published.acked.update(ids)
        published.retries += failed
        await asyncio.sleep(PACE_S)
    return published


async def kill_and_restart(cluster: PrivateCluster, pipeline: Pipeline, node: int) -> None:
    await cluster.kill_node(node)
    await asyncio.sleep(DOWN_S)
    await cluster.start_node(node)
    # The next fault must find three replicas in sync, or it would take away a quorum.
    topics = ["clicks", "webhook.endpoints", "webhook.retry.1s", "webhook.dlq"]
    await cluster.wait_in_sync([*map(pipeline.topic, topics), "__consumer_offsets"])


async def inject_faults(cluster: PrivateCluster, pipeline: Pipeline) -> list[int]:
    """Kill one node and start it again; then the leader of ``clicks`` partition 0. The
    nodes killed, in order."""
    await asyncio.sleep(FIRST_FAULT_AFTER_S)
    await kill_and_restart(cluster, pipeline, FIRST_VICTIM)
    leader = (await cluster.leaders(pipeline.topic("clicks")))[0]
    await kill_and_restart(cluster, pipeline, leader)
    return [FIRST_VICTIM, leader]


@pytest.mark.timeout(420)
async def test_ten_thousand_clicks_survive_a_killed_broker_and_a_killed_leader(
    start_pipeline: StartPipeline, whole_cluster: PrivateCluster, receiver: Receiver
) -> None:
    started = time.monotonic()
    pipeline = await start_pipeline(
        CLICKHOOK_RETRY_SCHEDULE="1s,2s,4s",
        CLICKHOOK_LOG_LEVEL="warning",
        CLICKHOOK_ATTEMPT_LOG="false",
        **REPLICATED,
    )
    await pipeline.create_endpoint(receiver.url("/cluster"))
    events = [
        make_click(f"evt_cluster_{n}", account_id=ACCOUNT_ID, link_id=f"lnk_{n % 30}")
        for n in range(CLICKS)
    ]
    ids = {event["id"] for event in events}

    async with ReadinessWatch(pipeline).running() as watch:
        published, killed = await asyncio.gather(
            publish(pipeline, events), inject_faults(whole_cluster, pipeline)
        )
        counts, dead = await settle(pipeline, receiver, ids, SETTLE_TIMEOUT_S)
        recovered = await watch.all_ready(within_s=30)
    in_log = await logged_click_ids(pipeline)

    print(
        f"\ncluster: {CLICKS} clicks, nodes killed {killed}, {len(published.acked)} acked, "
        f"{published.retries} batches sent again, slowest 202 after "
        f"{published.slowest_s:.1f}s, {sum(counts.values())} deliveries "
        f"({len(counts)} clicks, {sum(counts.values()) - len(counts)} duplicates), "
        f"{len(dead)} dead-lettered, not ready {dict(watch.unready_s)} s, "
        f"{time.monotonic() - started:.0f}s"
    )
    assert published.acked == ids
    assert published.acked <= in_log, f"202 for {len(published.acked - in_log)} ids not in the log"
    missing = ids - set(counts) - set(dead)
    assert not missing, (
        f"{len(missing)} clicks neither delivered nor dead-lettered\n{pipeline.logs()}"
    )
    assert all(dead.values()), "a dead letter without a reason"
    assert not watch.exited, f"services exited: {watch.exited}\n{pipeline.logs()}"
    assert recovered, f"not ready after the faults\n{pipeline.logs()}"


async def test_services_create_every_topic_on_three_nodes_with_two_needed_in_sync(
    start_pipeline: StartPipeline, whole_cluster: PrivateCluster
) -> None:
    pipeline = await start_pipeline(**REPLICATED)
    settings = load_settings(
        {"CLICKHOOK_TOPIC_PREFIX": pipeline.prefix, "CLICKHOOK_RETRY_SCHEDULE": ""} | REPLICATED
    )
    # The group's offsets too: a lost commit would deliver everything after it again.
    names = [spec.name for spec in topic_specs(settings)] + ["__consumer_offsets"]

    layout = {name: await whole_cluster.partitions(name) for name in names}
    in_sync = {
        name: await whole_cluster.topic_config(name, "min.insync.replicas") for name in names
    }

    replicas = {
        len(state.replicas) for partitions in layout.values() for state in partitions.values()
    }
    assert replicas == {3}
    assert all(layout.values()), "a topic without partitions"
    assert in_sync == dict.fromkeys(names, "2")
