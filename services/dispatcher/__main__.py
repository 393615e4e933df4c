"""python -m services.dispatcher: consume ``clicks`` and deliver each to its endpoints."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from services.dispatcher.service import SERVICE, Dispatcher
from shared.delivery.deliverer import Deliverer
from shared.delivery.endpoint_gate import EndpointGate
from shared.delivery.worker import run_delivery_worker
from shared.kafka.clients import create_consumer
from shared.kafka.lag import dispatcher_lag_scope
from shared.kafka.partition_worker import PartitionWorker
from shared.kafka.service_base import ServiceBase
from shared.model.topics import DISPATCHER_GROUP, Topics
from shared.ops.process import run


def build_worker(
    base: ServiceBase, deliverer: Deliverer, gate: EndpointGate
) -> tuple[AIOKafkaConsumer, PartitionWorker]:
    settings = base.settings
    topics = Topics(settings.topic_prefix)
    dispatcher = Dispatcher(
        settings,
        producer=base.producer,
        endpoints=base.endpoints,
        deliverer=deliverer,
        gate=gate,
    )
    consumer = create_consumer(settings, group_id=topics.group(DISPATCHER_GROUP))
    worker = PartitionWorker(
        consumer,
        dispatcher.handle,
        max_in_flight=settings.max_in_flight,
        drain_grace_s=settings.drain_grace_s,
        on_drain_timeout=dispatcher.defer_running,
        on_undecodable=dispatcher.set_aside_undecodable,
    )
    consumer.subscribe([topics.clicks], listener=worker.listener)
    return consumer, worker


async def main() -> None:
    await run_delivery_worker(
        SERVICE, build_worker, port=lambda s: s.dispatcher_port, lag_scope=dispatcher_lag_scope
    )


if __name__ == "__main__":
    run(main)
