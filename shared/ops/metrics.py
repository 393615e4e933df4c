"""Prometheus metrics, named once. Label sets are bounded: never a label per event.

Every labelled series an alert or a dashboard panel reads exists from the service's start, at
zero (``initialise``): rate() and increase() need two samples, so a series born with its first
error would hide that error, and an alert on it could not fire on it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Literal, get_args, get_origin

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from shared.model.errors import InvalidClickReason
from shared.model.messages import BreakerState, DeadLetterReason, DeferralReason, Outcome
from shared.model.operational import OperationalEventType
from shared.model.topics import DISPATCHER_GROUP, RETRY_GROUP, Topics
from shared.ops.settings import Settings

Service = Literal["ingest", "dispatcher", "retry"]
DELIVERING_SERVICES: tuple[Service, ...] = ("dispatcher", "retry")
# Label values that are not a model type of their own, named here for the code that counts and
# for initialise() alike.
IngestRejection = Literal["malformed", "invalid"]
AttemptLogDropReason = Literal["full", "send_failed"]
# Ingest's click route: the route label of clickhook_ingest_requests_total, spelled once.
INGEST_CLICKS_ROUTE = "/v1/clicks"
# The retry service sets an unreadable envelope aside in the dead-letter topic as it was.
MALFORMED_ENVELOPE = "malformed_envelope"
DeadLetterLabel = DeadLetterReason | Literal["malformed_envelope"]
OperationalEventResult = Literal["published", "failed"]
EndpointTableWaitOutcome = Literal["reached", "timed_out"]

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
OPERATIONAL_EVENTS = Counter(
    "clickhook_operational_events_total",
    "Operational webhooks (endpoint.disabled, delivery.exhausted, ...) handed to delivery, or "
    "lost because the broker did not take them in time (ingest only)",
    ["type", "result"],
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
    # Past 60 s too: ClickhookRetryBacklog fires on a p99 above 60 s, and a quantile that falls
    # in the +Inf bucket reads as the highest finite bound, so 60 s as the last bound would
    # keep that alert silent however late retries ran.
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
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
ENDPOINT_TABLE_WAITS = Counter(
    "clickhook_endpoint_table_waits_total",
    "Clicks that waited for the dispatcher's endpoint table to read as far as ingest's had when "
    "it accepted them, by outcome (timed_out: routed after the wait with the table as it was)",
    ["outcome"],
)
CAPS_SHARE = Gauge(
    "clickhook_caps_share_ratio",
    "This process's share of every endpoint's rate and concurrency caps (the webhook.caps "
    "partitions it holds in the clickhook-caps group, of all): 0 until it has one",
    ["service"],
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
DELIVERY_LOG_UNAVAILABLE = Gauge(
    "clickhook_delivery_log_unavailable",
    "1 while this ingest instance's delivery log routes answer 503 (index full, corrupt or "
    "being reopened), else 0; click intake and the endpoint API never depend on it",
)
DELIVERY_LOG_FAILURES = Counter(
    "clickhook_delivery_log_failures_total",
    "Failures of the delivery log's index, each followed by its own recovery: full (evicts "
    "and retries), corrupt or error (rebuilt from the topics)",
    ["reason"],
)
# What delivery_log.store.failure_reason answers.
DELIVERY_LOG_FAILURE_REASONS = ("full", "corrupt", "error")
DELIVERY_LOG_INDEX_BYTES = Gauge(
    "clickhook_delivery_log_index_bytes",
    "Bytes of the delivery log's index holding rows (at most CLICKHOOK_DELIVERY_LOG_MAX_BYTES)",
)
DELIVERY_LOG_BUDGET_BYTES = Gauge(
    "clickhook_delivery_log_budget_bytes",
    "The delivery log index's byte budget (CLICKHOOK_DELIVERY_LOG_MAX_BYTES)",
)
DELIVERY_LOG_EVICTED = Counter(
    "clickhook_delivery_log_evicted_rows_total",
    "Rows the delivery log evicted, oldest first, to stay within its byte budget",
)


# --- zero from the start ----------------------------------------------------------------------


def literal_values(kind: object) -> tuple[str, ...]:
    """The strings a ``Literal`` (or a union of them) allows: a value added to the type is
    initialised without anyone touching this module."""
    if get_origin(kind) is Literal:
        return tuple(str(value) for value in get_args(kind))
    return tuple(value for member in get_args(kind) for value in literal_values(member))


# An attempt's outcome; "deferred" is a delivery that waited without one (not an attempt).
ATTEMPT_OUTCOMES = tuple(o for o in literal_values(Outcome) if o != "deferred")
# The breaker gauge counts endpoints whose breaker is not closed.
BREAKER_STATES_COUNTED = tuple(s for s in literal_values(BreakerState) if s != "closed")


def zero(metric: MetricWrapperBase, **values: Iterable[str]) -> None:
    """Create the child of every combination of ``values`` (labelname → its values)."""
    names = list(values)
    for combination in itertools.product(*values.values()):
        metric.labels(**dict(zip(names, combination, strict=True)))


def initialise(service: Service, settings: Settings) -> None:
    """Create, at zero, each series ``service`` may ever write that ops read: every known
    label value (outcome, reason, tier, topic, state). Call once at service start."""
    topics = Topics(settings.topic_prefix)
    # Every service reads some of every kind of topic; a skip is counted by topic alone.
    zero(UNDECODABLE_BATCHES, topic=topics.every(settings.tier_delays_s))
    zero(
        OPERATIONAL_EVENTS,
        type=literal_values(OperationalEventType),
        result=literal_values(OperationalEventResult),
    )
    if service == "ingest":
        _initialise_ingest(settings)
    else:
        _initialise_delivery(service, settings)


def _initialise_ingest(settings: Settings) -> None:
    zero(INGEST_REQUESTS, route=[INGEST_CLICKS_ROUTE], status=["202"])
    zero(INGEST_EVENTS, result=["accepted"], reason=[""])
    zero(INGEST_EVENTS, result=["rejected"], reason=literal_values(IngestRejection))
    zero(PRODUCE_ERRORS, topic=[Topics(settings.topic_prefix).clicks])
    zero(DELIVERY_LOG_FAILURES, reason=DELIVERY_LOG_FAILURE_REASONS)


def _initialise_delivery(service: Service, settings: Settings) -> None:
    topics = Topics(settings.topic_prefix)
    tiers = topics.retry_tiers(settings.tier_delays_s)
    produced_to = [*tiers, topics.dlq]
    dead_letter_reasons = literal_values(DeadLetterReason)
    if service == "dispatcher":
        group = topics.group(DISPATCHER_GROUP)
        produced_to.append(topics.clicks_invalid)
        zero(INVALID_RECORDS, reason=literal_values(InvalidClickReason))
        zero(ENDPOINT_TABLE_WAITS, outcome=literal_values(EndpointTableWaitOutcome))
    else:
        group = topics.group(RETRY_GROUP)
        dead_letter_reasons = literal_values(DeadLetterLabel)
        zero(RETRY_WAITING, topic=tiers)
    if settings.attempt_log_enabled:
        produced_to.append(topics.attempts)
        zero(ATTEMPT_LOG_DROPPED, service=[service], reason=literal_values(AttemptLogDropReason))
    only = [service]
    zero(DELIVERY_ATTEMPTS, service=only, outcome=ATTEMPT_OUTCOMES)
    zero(DELIVERY_ATTEMPT_SECONDS, service=only)
    zero(DELIVERY_LATENCY_SECONDS, service=only)
    zero(DELIVERIES_IN_FLIGHT, service=only)
    zero(DELIVERIES_DEFERRED, service=only, reason=literal_values(DeferralReason))
    # The tier label is the schedule position (0 is the first retry), as the deliverer counts.
    zero(
        RETRY_SCHEDULED, service=only, tier=[str(t) for t in range(len(settings.retry_schedule_s))]
    )
    zero(DEAD_LETTERS, service=only, reason=dead_letter_reasons)
    zero(BREAKERS, service=only, state=BREAKER_STATES_COUNTED)
    zero(PRODUCE_ERRORS, topic=produced_to)
    zero(LAG_SAMPLE_ERRORS, group=[group])
