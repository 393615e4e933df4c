"""This process's share of every endpoint's caps, from the caps consumer group.

Every delivering process (each dispatcher and retry replica) joins the group
``clickhook-caps`` on the topic ``webhook.caps`` with the round-robin assignor; the partitions
it holds are its ``Share`` (shared/model/caps.py says why and how a share is used). The topic
is never written: the consumer keeps polling with every partition paused, which costs no
fetches and keeps it in the group (aiokafka counts time outside ``getmany`` toward
``max_poll_interval_ms``).

Holdings through a rebalance: aiokafka's eager protocol revokes every partition before the
new assignment. The last holdings are kept meanwhile: the members of the old generation still
hold disjoint partitions, and a newcomer holds none until its first assignment, so nothing
overlaps until the new assignment arrives (at about the same moment for every member). A
process whose session was lost (the coordinator dropped it; the others already hold its
partitions) learns it when the coordinator refuses its heartbeat: the revocation then finds
its member id reset, and it holds nothing until it is back in the group.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from shared.model.caps import CAPS_PARTITIONS, Share
from shared.model.topics import CAPS_GROUP, Topics
from shared.ops import metrics
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

POLL_TIMEOUT_MS = 1000
# The longest a process waits for its first share before it gives up starting (the
# orchestrator restarts it): a group that cannot form in this time is not one to deliver in.
FIRST_SHARE_TIMEOUT_S = 60.0
# aiokafka's mark of a member the coordinator does not know (JoinGroupRequest.UNKNOWN_MEMBER_ID).
UNKNOWN_MEMBER_ID = ""


class CapsMembership(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(
        self,
        settings: Settings,
        service: str,
        *,
        first_share_timeout_s: float = FIRST_SHARE_TIMEOUT_S,
    ) -> None:
        topics = Topics(settings.topic_prefix)
        self.topic = topics.caps
        # How long the process waits for its first share before it gives up starting.
        self.first_share_timeout_s = first_share_timeout_s
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=topics.group(CAPS_GROUP),
            enable_auto_commit=False,
            auto_offset_reset="latest",
            partition_assignment_strategy=(RoundRobinPartitionAssignor,),
            client_id=f"clickhook-caps-{service}",
        )
        self._share = Share.of(set(), CAPS_PARTITIONS)
        self.assigned = asyncio.Event()  # set once the first share arrived
        self._gauge = metrics.CAPS_SHARE.labels(service=service)
        self._gauge.set(0)

    def share(self) -> Share:
        """The share held now (nothing before the first assignment)."""
        return self._share

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=self)

    async def stop(self) -> None:
        """Leave the group: the others take over this share at once, not after a timeout."""
        await self._consumer.stop()

    async def run(self) -> None:
        """Keep polling, every partition paused, to stay in the group."""
        while True:
            await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)

    # --- the rebalance listener ---------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._share.held and self._consumer._coordinator.member_id == UNKNOWN_MEMBER_ID:
            self._hold(set())
            log.warning("caps_share_lost", held_before=len(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # A rebalance forgets pauses: pause again, so no fetch is ever sent.
        self._consumer.pause(*assigned)
        self._hold({tp.partition for tp in assigned})
        self.assigned.set()

    def _hold(self, partitions: set[int]) -> None:
        total = len(self._consumer.partitions_for_topic(self.topic) or ()) or CAPS_PARTITIONS
        self._share = Share.of(partitions, total)
        self._gauge.set(self._share.fraction)
        log.info("caps_share", held=len(partitions), partitions=total)
