"""Series exist from the start, at zero, for every label value the code can write: taken from
the model's Literal types and the settings, so a new reason or tier cannot be missed."""

from __future__ import annotations

from typing import Literal

import pytest

from shared.model.errors import InvalidClickReason
from shared.model.messages import DeadLetterReason, DeferralReason, Outcome
from shared.ops.metrics import literal_values
from tests.support.initial_metrics import SERVICES, SETTINGS, initial_samples, label_values

WORKERS = ("dispatcher", "retry")


def test_literal_values_flattens_unions_of_literals() -> None:
    assert literal_values(Literal["a", "b"] | Literal["c"]) == ("a", "b", "c")


def test_every_initial_sample_is_zero() -> None:
    for service in SERVICES:
        moved = [s for s in initial_samples(service) if s[0].startswith("clickhook_") and s[2]]
        moved = [s for s in moved if not s[0].endswith("_created")]
        assert not moved, f"{service}: {moved}"


@pytest.mark.parametrize("service", WORKERS)
def test_workers_count_every_outcome_reason_and_tier_from_the_start(service: str) -> None:
    def values(name: str, label: str) -> set[str]:
        return label_values(service, name, label)

    assert values("clickhook_delivery_attempts_total", "outcome") == set(
        literal_values(Outcome)
    ) - {"deferred"}
    assert values("clickhook_deliveries_deferred_total", "reason") == set(
        literal_values(DeferralReason)
    )
    assert set(literal_values(DeadLetterReason)) <= values("clickhook_dead_letters_total", "reason")
    tiers = len(SETTINGS["CLICKHOOK_RETRY_SCHEDULE"].split(","))
    assert values("clickhook_retry_scheduled_total", "tier") == {str(t) for t in range(tiers)}
    assert values("clickhook_circuit_breakers", "state") == {"open", "half_open"}
    assert values("clickhook_attempt_log_dropped_total", "reason") == {"full", "send_failed"}
    assert values("clickhook_delivery_attempts_total", "service") == {service}
    produced_to = values("clickhook_kafka_produce_errors_total", "topic")
    assert {"t.webhook.retry.1s", "t.webhook.retry.1h", "t.webhook.dlq"} <= produced_to
    assert values("clickhook_kafka_lag_sample_errors_total", "group") == {f"t.clickhook-{service}"}


def test_the_dispatcher_counts_every_invalid_record_reason() -> None:
    reasons = label_values("dispatcher", "clickhook_invalid_records_total", "reason")
    assert reasons == set(literal_values(InvalidClickReason))
    assert "t.clicks.invalid" in label_values(
        "dispatcher", "clickhook_kafka_produce_errors_total", "topic"
    )


def test_the_retry_service_counts_malformed_envelopes_and_waiting_tiers() -> None:
    assert "malformed_envelope" in label_values("retry", "clickhook_dead_letters_total", "reason")
    waiting = label_values("retry", "clickhook_retry_waiting", "topic")
    assert waiting >= {"t.webhook.retry.1s", "t.webhook.retry.1m", "t.webhook.retry.1h"}


def test_ingest_counts_accepted_and_rejected_events_and_click_produce_errors() -> None:
    results = {
        (labels["result"], labels["reason"])
        for name, labels, _ in initial_samples("ingest")
        if name == "clickhook_ingest_events_total"
    }
    assert results == {("accepted", ""), ("rejected", "malformed"), ("rejected", "invalid")}
    assert label_values("ingest", "clickhook_kafka_produce_errors_total", "topic") == {"t.clicks"}
    assert not label_values("ingest", "clickhook_delivery_attempts_total", "outcome")
