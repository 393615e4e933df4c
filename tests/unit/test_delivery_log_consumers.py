"""Which Kafka consumers the delivery log builds, by store (no broker: none is started): only
the embedded index fills its history behind the newest hour, so only it has the fill's
consumer; a shared store is filled by the group from the positions it holds."""

from __future__ import annotations

from services.ingest.delivery_log.history import HistoryReader
from services.ingest.delivery_log.log import DeliveryLog
from shared.ops.settings import load_settings

UNREACHABLE = {"CLICKHOOK_KAFKA_BOOTSTRAP": "127.0.0.1:9"}


async def test_a_shared_store_has_no_history_fill_and_no_consumer_for_one() -> None:
    settings = load_settings(
        {**UNREACHABLE, "CLICKHOOK_DELIVERY_LOG_URL": "postgresql://127.0.0.1:9/clickhook"}
    )
    delivery_log = DeliveryLog(settings)
    try:
        assert delivery_log.history is None
        assert delivery_log.status().complete_since is None
    finally:
        await delivery_log.stop()


async def test_the_embedded_index_has_its_history_fill() -> None:
    delivery_log = DeliveryLog(load_settings(UNREACHABLE))
    try:
        assert isinstance(delivery_log.history, HistoryReader)
    finally:
        await delivery_log.stop()
