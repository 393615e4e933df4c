"""Prometheus metrics, named once. Label sets are bounded: never a label per event."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)

INGEST_REQUESTS = Counter(
    "clickhook_ingest_requests_total", "HTTP requests handled by ingest", ["route", "status"]
)
INGEST_EVENTS = Counter(
    "clickhook_ingest_events_total", "Click events by result", ["result", "reason"]
)
INGEST_PUBLISH_SECONDS = Histogram(
    "clickhook_ingest_publish_seconds",
    "Time from request to broker acknowledgement",
    buckets=LATENCY_BUCKETS_S,
)
INGEST_REQUEST_BYTES = Histogram(
    "clickhook_ingest_request_bytes",
    "Size of request bodies",
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576),
)

DELIVERY_ATTEMPTS = Counter(
    "clickhook_delivery_attempts_total", "Delivery attempts by outcome", ["service", "outcome"]
)
DELIVERY_ATTEMPT_SECONDS = Histogram(
    "clickhook_delivery_attempt_duration_seconds",
    "Duration of one delivery attempt",
    ["service"],
    buckets=LATENCY_BUCKETS_S,
)
DELIVERY_LATENCY_SECONDS = Histogram(
    "clickhook_delivery_latency_seconds",
    "Click occurred_at to successful delivery",
    ["service"],
    buckets=LATENCY_BUCKETS_S,
)
DELIVERIES_IN_FLIGHT = Gauge(
    "clickhook_deliveries_in_flight", "Deliveries currently in flight", ["service"]
)
DELIVERIES_DEFERRED = Counter(
    "clickhook_deliveries_deferred_total",
    "Deliveries put back to wait in a retry tier without an attempt, by why: endpoint_busy "
    "(at its concurrency or rate caps), breaker_open (known to be down), draining (shutdown)",
    ["service", "reason"],
)
RETRY_SCHEDULED = Counter(
    "clickhook_retry_scheduled_total", "Deliveries written to a retry tier", ["service", "tier"]
)
DEAD_LETTERS = Counter(
    "clickhook_dead_letters_total",
    "Deliveries written to the dead-letter topic",
    ["service", "reason"],
)
INVALID_RECORDS = Counter(
    "clickhook_invalid_records_total", "Records moved to clicks.invalid", ["reason"]
)
UNDECODABLE_BATCHES = Counter(
    "clickhook_undecodable_batches_total",
    "Record batches a consumer could not decode (corrupt bytes, CRC mismatch, unknown codec or "
    "format), skipped; on clicks each is also kept in clicks.invalid",
    ["topic"],
)
RETRY_LATENESS_SECONDS = Histogram(
    "clickhook_retry_lateness_seconds",
    "How long after its due time a retry was attempted",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
)
RETRY_WAITING = Gauge(
    "clickhook_retry_waiting",
    "Retry partitions paused until their head record is due",
    ["topic"],
)
ENDPOINTS = Gauge("clickhook_endpoints", "Endpoints known, by state", ["state"])
PRODUCE_ERRORS = Counter(
    "clickhook_kafka_produce_errors_total", "Failed produce requests", ["topic"]
)
REPLAYED = Counter("clickhook_replayed_total", "Dead letters put back into delivery")
ATTEMPT_LOG_DROPPED = Counter(
    "clickhook_attempt_log_dropped_total",
    "Delivery log records not written to webhook.attempts: full (too many waiting while the "
    "broker was slow or away) or send_failed; deliveries are not affected",
    ["service", "reason"],
)
BREAKERS = Gauge(
    "clickhook_circuit_breakers", "Endpoints whose breaker is not closed", ["service", "state"]
)

# Computed by shared/kafka/lag.py. Every replica reports its whole group: aggregate with max.
CONSUMER_LAG = Gauge(
    "clickhook_kafka_consumer_lag",
    "Records of a topic not yet consumed by a consumer group (end minus committed offsets)",
    ["group", "topic"],
)
RETRY_ENVELOPES = Gauge(
    "clickhook_retry_envelopes",
    "Envelopes in a retry tier not yet consumed: due (their time has passed) or waiting",
    ["topic", "state"],
)
LAG_SAMPLE_ERRORS = Counter(
    "clickhook_kafka_lag_sample_errors_total",
    "Failed consumer lag measurements (the lag gauges keep their last value)",
    ["group"],
)

# services/ingest/delivery_log: each ingest instance's own index of the delivery log.
DELIVERY_LOG_BEHIND = Gauge(
    "clickhook_delivery_log_behind_records",
    "Records of webhook.attempts, webhook.dlq and webhook.replays not yet in this ingest "
    "instance's delivery log index",
)
DELIVERY_LOG_UNREADABLE = Counter(
    "clickhook_delivery_log_unreadable_total",
    "Records the delivery log could not decode (left in the topic, not indexed)",
)
