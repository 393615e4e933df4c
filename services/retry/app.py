"""Wiring of the retry process."""

from __future__ import annotations

from services.retry.service import SERVICE, RetryService
from shared.kafka import create_consumer
from shared.lag import lag_reporting, retry_lag_scope
from shared.lifecycle import stop_on_signals
from shared.logging import configure_logging
from shared.runtime import courier_for, kafka_runtime, ops_server, run_worker
from shared.settings import load_settings
from shared.topics import RETRY_GROUP, Topics
from shared.worker import PartitionWorker

RESUME_FETCH_WAIT_MS = 50


async def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    topics = Topics(settings.topic_prefix)
    async with (
        kafka_runtime(settings) as rt,
        courier_for(rt, SERVICE) as courier,
        ops_server(rt, settings.retry_port),
        lag_reporting(settings, retry_lag_scope(settings)),
    ):
        stop_on_signals(rt.stop)
        # aiokafka does not fetch a resumed partition while another fetch to the same broker
        # is in flight; a short long-poll keeps a partition that just fell due from waiting
        # up to the default 500 ms behind it.
        consumer = create_consumer(
            settings, group_id=topics.group(RETRY_GROUP), fetch_max_wait_ms=RESUME_FETCH_WAIT_MS
        )
        service = RetryService(settings, consumer=consumer, endpoints=rt.endpoints, courier=courier)
        worker = PartitionWorker(
            consumer,
            service.handle,
            max_in_flight=settings.max_in_flight,
            drain_grace_s=settings.drain_grace_s,
            gate=service.admit,
            next_wakeup_s=service.next_wakeup_s,
            on_poll=service.resume_due,
        )
        # A pattern, not the current schedule's list: tiers of an older schedule still drain.
        consumer.subscribe(pattern=topics.retry_pattern, listener=worker.listener)
        await run_worker(rt, consumer, worker)
