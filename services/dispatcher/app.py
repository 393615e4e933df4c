"""Wiring of the dispatcher process."""

from __future__ import annotations

from services.dispatcher.service import SERVICE, Dispatcher
from shared.kafka import create_consumer
from shared.lag import dispatcher_lag_scope, lag_reporting
from shared.lifecycle import stop_on_signals
from shared.logging import configure_logging
from shared.runtime import courier_for, kafka_runtime, ops_server, run_worker
from shared.settings import load_settings
from shared.topics import DISPATCHER_GROUP, Topics
from shared.worker import PartitionWorker


async def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    topics = Topics(settings.topic_prefix)
    async with (
        kafka_runtime(settings) as rt,
        courier_for(rt, SERVICE) as courier,
        ops_server(rt, settings.dispatcher_port),
        lag_reporting(settings, dispatcher_lag_scope(settings)),
    ):
        stop_on_signals(rt.stop)
        dispatcher = Dispatcher(
            settings, producer=rt.producer, endpoints=rt.endpoints, courier=courier
        )
        consumer = create_consumer(settings, group_id=topics.group(DISPATCHER_GROUP))
        worker = PartitionWorker(
            consumer,
            dispatcher.handle,
            max_in_flight=settings.max_in_flight,
            drain_grace_s=settings.drain_grace_s,
            hand_off=dispatcher.hand_off,
        )
        consumer.subscribe([topics.clicks], listener=worker.listener)
        await run_worker(rt, consumer, worker)
