"""python -m services.retry: drain the delayed-retry tiers, never before a record is due.

The operator commands (dead letters, replay) are the ``clickhook`` command's (shared/cli)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from services.retry.service import PARTITION_FETCH_BYTES, SERVICE, RetryService
from shared.delivery.deliverer import Deliverer
from shared.delivery.endpoint_gate import EndpointGate
from shared.delivery.worker import run_delivery_worker
from shared.kafka.clients import create_consumer
from shared.kafka.lag import retry_lag_scope
from shared.kafka.partition_worker import PartitionWorker
from shared.kafka.service_base import ServiceBase
from shared.model.topics import RETRY_GROUP, Topics
from shared.ops.process import run

# aiokafka does not fetch a resumed partition while another fetch to the same broker is in
# flight; a short long-poll keeps a partition that just fell due from waiting up to the
# default 500 ms behind it.
RESUME_FETCH_WAIT_MS = 50


def build_worker(
    base: ServiceBase, deliverer: Deliverer, gate: EndpointGate
) -> tuple[AIOKafkaConsumer, PartitionWorker]:
    settings = base.settings
    topics = Topics(settings.topic_prefix)
    consumer = create_consumer(
        settings,
        group_id=topics.group(RETRY_GROUP),
        fetch_max_wait_ms=RESUME_FETCH_WAIT_MS,
        partition_fetch_bytes=PARTITION_FETCH_BYTES,
    )
    service = RetryService(
        settings,
        producer=base.producer,
        endpoints=base.endpoints,
        deliverer=deliverer,
        gate=gate,
    )
    worker = PartitionWorker(
        consumer,
        service.handle,
        max_in_flight=settings.max_in_flight,
        drain_grace_s=settings.drain_grace_s,
        not_before_ms=service.due_at_ms,
        on_held=service.count_waiting,
    )
    # A pattern, not the current schedule's list: tiers of an older schedule still drain.
    consumer.subscribe(pattern=topics.retry_pattern, listener=worker.listener)
    return consumer, worker


async def main() -> None:
    await run_delivery_worker(
        SERVICE, build_worker, port=lambda s: s.retry_port, lag_scope=retry_lag_scope
    )


if __name__ == "__main__":
    run(main)
