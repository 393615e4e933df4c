"""An idempotent producer that survives a lost sequence: it starts again under a new producer id.

An idempotent producer numbers its batches per partition, and the broker takes only the next
number. aiokafka (0.14) never recovers once that chain breaks: when a batch is lost (failed
while the broker restarted, say), every later batch to that partition is answered
``OUT_OF_ORDER_SEQUENCE_NUMBER`` and fails, for as long as the process lives. Seen in the
ledger test: after the broker's 5 s outage the dispatcher could not hand a single delivery to
a retry tier for the remaining 3.5 minutes of the run; alone (a broker restarted under 50
concurrent senders) the producer never sent again in 2 runs of 4. The Java client, in the same
state, drops its producer id and takes a new one, whose numbers start again at zero (KIP-360);
this does the same: on ``OutOfOrderSequenceNumber`` or ``UnknownProducerId`` the id is
forgotten, and aiokafka's sender asks the broker for a new one before its next batch.

What that costs is what the Java client accepts: a batch retried across the change of id is
not deduplicated by the broker (at-least-once, which every consumer here already handles).

aiokafka has no call for it, so this sets three attributes of its ``TransactionManager``; the
producer's ``start()`` fails if they are gone (aiokafka is pinned below 0.15).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber, UnknownProducerId
from aiokafka.producer.transaction_manager import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    PidAndEpoch,
    TransactionManager,
)

from shared.kafka.bulk import Header, KeyedValue, acknowledged, append_records, check_internals

log = structlog.get_logger(__name__)

_SEQUENCE_LOST = (OutOfOrderSequenceNumber, UnknownProducerId)
_MANAGER_STATE = ("_pid_and_epoch", "_pid_waiter", "_sequence_numbers")


class SequenceRecoveringProducer(AIOKafkaProducer):  # type: ignore[misc]
    """``AIOKafkaProducer`` (idempotent, not transactional) that takes a new producer id when
    the broker no longer accepts its sequence numbers; the failed send still fails, and the
    caller's retry goes out under the new id."""

    async def start(self) -> None:
        await super().start()
        manager = self._txn_manager
        # At start, not at the first lost sequence, if aiokafka's internals moved.
        if manager is not None and not all(hasattr(manager, a) for a in _MANAGER_STATE):
            raise RuntimeError("aiokafka changed: shared/kafka/idempotence.py needs a look")
        check_internals(self)

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await super().send(*args, **kwargs)
        future.add_done_callback(self._after_send)
        return future

    async def send_all(
        self, topic: str, records: Sequence[KeyedValue], headers: list[Header]
    ) -> None:
        """Produce every record (key, value) and return once all are acknowledged; raise as
        ``send`` or a record's future would (``shared.kafka.bulk``)."""
        await acknowledged(await append_records(self, topic, records, headers, self._after_send))

    def _after_send(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or not isinstance(future.exception(), _SEQUENCE_LOST):
            return
        manager = self._txn_manager
        if manager is None or manager.transactional_id is not None or not manager.has_pid():
            return  # not idempotent, a transaction's to handle, or already forgotten
        log.warning(
            "producer_sequence_lost",
            producer_id=manager.producer_id,
            error=type(future.exception()).__name__,
        )
        forget_producer_id(manager)


def forget_producer_id(manager: TransactionManager) -> None:
    """Back to no producer id: aiokafka's sender gets a new one before its next batch, and the
    sequence numbers of every partition start again at zero."""
    manager._pid_and_epoch = PidAndEpoch(NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
    if manager._pid_waiter.done():
        manager._pid_waiter = asyncio.get_running_loop().create_future()
    manager._sequence_numbers.clear()
