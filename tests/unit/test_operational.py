"""Operational webhooks' pure parts: the events, their ids, the reserved endpoint, the loop
guard; the settings that turn them on."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from shared.delivery.breaker import CircuitBreaker, Result
from shared.kafka.operational import OperationalWebhooks
from shared.model.errors import SettingsError
from shared.model.formats import build_request
from shared.model.messages import (
    AttemptRecord,
    DeadLetter,
    DeadLetterReason,
    DeliveryEnvelope,
    Endpoint,
)
from shared.model.operational import (
    EXHAUSTED_REASONS,
    OPERATIONAL_ACCOUNT_ID,
    OPERATIONAL_ENDPOINT_ID,
    RESPONSE_BODY_CHARS,
    delivery_exhausted,
    endpoint_disabled,
    endpoint_enabled,
    endpoint_recovered,
    operational_endpoint,
    operational_envelope,
)
from shared.ops.settings import load_settings
from tests.support.endpoints import endpoint_to

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
URL = "https://shortener.example/hooks/clickhook"
AT_MS = 1_764_237_600_123


def disabled_endpoint(version: int = 7) -> Endpoint:
    endpoint = endpoint_to("https://receiver.example/hook")
    return msgspec.structs.replace(
        endpoint,
        enabled=False,
        disabled_reason="endpoint answered 410 Gone",
        metadata={"crm": "c-1"},
        updated_at=datetime.fromtimestamp(AT_MS / 1000, UTC),
        version=version,
    )


def letter(
    reason: DeadLetterReason = "exhausted",
    *,
    endpoint_id: str = "ep_1",
    replay_id: str | None = None,
    response_body: str | None = "busy",
    attempts: int = 1,
) -> DeadLetter:
    history = [
        AttemptRecord(
            webhook_id="msg_1",
            event_id="evt_1",
            endpoint_id=endpoint_id,
            account_id="acc_1",
            attempt=number,
            at_ms=AT_MS + number,
            duration_ms=3.0,
            outcome="http_5xx",
            status=503,
            response_body=response_body,
        )
        for number in range(1, attempts + 1)
    ]
    envelope = DeliveryEnvelope(
        webhook_id="msg_1",
        event_id="evt_1",
        endpoint_id=endpoint_id,
        account_id="acc_1",
        event={"id": "evt_1", "type": "link.clicked", "link": {"id": "lnk_9"}},
        attempts_made=attempts,
        tier=0,
        due_at_ms=0,
        attempts=history,
        replay_id=replay_id,
    )
    return DeadLetter(reason=reason, dead_at_ms=AT_MS + 10, envelope=envelope)


def test_an_event_is_shaped_like_a_click_type_time_and_its_data() -> None:
    event = endpoint_disabled(disabled_endpoint(), "automatic")

    assert event["type"] == "endpoint.disabled"
    assert event["occurred_at"] == "2025-11-27T10:00:00.123Z"
    assert event["id"].startswith("evt_op_")
    assert event["endpoint_id"] == "ep_1"
    assert event["account_id"] == "acc_1"
    assert event["reason"] == "endpoint answered 410 Gone"
    assert event["trigger"] == "automatic"
    assert event["metadata"] == {"crm": "c-1"}


def test_the_same_fact_gives_the_same_id_and_webhook_id() -> None:
    first = endpoint_disabled(disabled_endpoint(version=7), "automatic")
    again = endpoint_disabled(disabled_endpoint(version=7), "automatic")
    later = endpoint_disabled(disabled_endpoint(version=9), "automatic")

    assert first["id"] == again["id"]
    assert operational_envelope(first, due_at_ms=1).webhook_id == (
        operational_envelope(again, due_at_ms=2).webhook_id
    )
    assert later["id"] != first["id"]


def test_disabled_and_enabled_by_the_same_write_are_different_events() -> None:
    endpoint = disabled_endpoint()
    assert endpoint_enabled(endpoint)["id"] != endpoint_disabled(endpoint, "manual")["id"]


def test_an_exhausted_delivery_carries_its_endpoint_event_and_last_attempt() -> None:
    event = delivery_exhausted(letter(attempts=3))

    assert event is not None
    assert event["type"] == "delivery.exhausted"
    assert (event["endpoint_id"], event["webhook_id"], event["event_id"]) == (
        "ep_1",
        "msg_1",
        "evt_1",
    )
    assert event["attempts_made"] == 3
    assert event["last_attempt"]["attempt"] == 3
    assert event["last_attempt"]["status"] == 503
    assert event["event"]["link"] == {"id": "lnk_9"}


def test_a_long_answer_is_cut_in_the_event() -> None:
    event = delivery_exhausted(letter(response_body="x" * (RESPONSE_BODY_CHARS + 1)))

    assert event is not None
    assert event["last_attempt"]["response_body"] == "x" * RESPONSE_BODY_CHARS


def test_a_letter_dead_without_attempts_has_no_last_attempt() -> None:
    event = delivery_exhausted(letter("endpoint_busy", attempts=0))
    assert event is not None
    assert event["last_attempt"] is None


def test_a_replay_that_dies_again_is_a_new_event() -> None:
    first = delivery_exhausted(letter())
    replayed = delivery_exhausted(letter(replay_id="rpl_1"))
    assert first is not None
    assert replayed is not None
    assert first["id"] != replayed["id"]
    assert first["id"] == delivery_exhausted(letter())["id"]  # type: ignore[index]


@pytest.mark.parametrize(
    "reason", ["endpoint_gone", "endpoint_deleted", "endpoint_disabled"], ids=str
)
def test_letters_of_an_endpoint_already_reported_make_no_event(reason: DeadLetterReason) -> None:
    assert reason not in EXHAUSTED_REASONS
    assert delivery_exhausted(letter(reason)) is None


def test_the_operational_endpoints_own_dead_letter_makes_no_event() -> None:
    assert delivery_exhausted(letter(endpoint_id=OPERATIONAL_ENDPOINT_ID)) is None


def test_the_operational_endpoints_recovery_makes_no_event() -> None:
    endpoint = operational_endpoint(URL, SECRET)
    assert endpoint is not None
    assert (
        endpoint_recovered(endpoint, recovered_by="msg_1", at_ms=AT_MS, failing_since_ms=1) is None
    )


def test_a_recovery_names_the_delivery_that_recovered_and_since_when_it_failed() -> None:
    endpoint = endpoint_to("https://receiver.example/hook")
    event = endpoint_recovered(
        endpoint, recovered_by="msg_2", at_ms=AT_MS, failing_since_ms=AT_MS - 60_000
    )
    assert event is not None
    assert event["webhook_id"] == "msg_2"
    assert event["failing_since"] == "2025-11-27T09:59:00.123Z"


def test_operational_events_are_signed_with_the_operators_secret() -> None:
    endpoint = operational_endpoint(URL, SECRET)
    assert endpoint is not None
    envelope = operational_envelope(endpoint_enabled(disabled_endpoint()), due_at_ms=0)
    now = datetime.now(UTC)

    body, headers = build_request(
        endpoint,
        envelope.event,
        webhook_id=envelope.webhook_id,
        timestamp_s=int(now.timestamp()),
        now=now,
    )

    Webhook(SECRET).verify(body, headers)
    sent = orjson.loads(body)
    assert sent["type"] == "endpoint.enabled"
    assert sent["timestamp"] == envelope.event["occurred_at"]
    assert sent["data"]["endpoint_id"] == "ep_1"
    assert (envelope.endpoint_id, envelope.account_id) == (
        OPERATIONAL_ENDPOINT_ID,
        OPERATIONAL_ACCOUNT_ID,
    )


def test_no_url_no_operational_endpoint() -> None:
    assert operational_endpoint("", "") is None


def test_the_breaker_says_since_when_an_endpoint_fails() -> None:
    breaker = CircuitBreaker(threshold=3, cooldowns_s=(1.0,))
    assert breaker.failing_since_s("ep_1") is None
    breaker.record("ep_1", Result.FAILED, 10.0, generation=0)
    breaker.record("ep_1", Result.DOWN, 12.0, generation=0)
    assert breaker.failing_since_s("ep_1") == 10.0
    breaker.record("ep_1", Result.SUCCESS, 13.0, generation=0)
    assert breaker.failing_since_s("ep_1") is None


def test_settings_read_the_url_and_secret_and_never_show_the_secret() -> None:
    settings = load_settings(
        {
            "CLICKHOOK_OPERATIONAL_WEBHOOK_URL": URL,
            "CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET": SECRET,
        }
    )
    assert settings.operational_webhook_url == URL
    assert settings.operational_webhook_secret == SECRET
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CLICKHOOK_OPERATIONAL_WEBHOOK_URL": URL}, "CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET"),
        (
            {"CLICKHOOK_OPERATIONAL_WEBHOOK_URL": URL, "CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET": "x"},
            "CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET",
        ),
        ({"CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET": SECRET}, "CLICKHOOK_OPERATIONAL_WEBHOOK_URL"),
        (
            {
                "CLICKHOOK_OPERATIONAL_WEBHOOK_URL": "ftp://x",
                "CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET": SECRET,
            },
            "CLICKHOOK_OPERATIONAL_WEBHOOK_URL",
        ),
    ],
    ids=["secret missing", "secret malformed", "url missing", "url not http"],
)
def test_settings_refuse_half_or_malformed_operational_webhooks(
    env: dict[str, str], name: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    assert raised.value.name == name
    assert SECRET not in str(raised.value)


class StalledProducer:
    """A broker that never acknowledges: every send waits until cancelled."""

    async def send_and_wait(self, *_args: Any, **_kwargs: Any) -> None:
        await asyncio.Event().wait()


def lost_events(event_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "clickhook_operational_events_total", {"type": event_type, "result": "failed"}
    )
    return value or 0.0


async def test_an_event_the_broker_does_not_take_in_time_is_counted_lost_not_raised() -> None:
    settings = load_settings(
        {
            "CLICKHOOK_OPERATIONAL_WEBHOOK_URL": URL,
            "CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET": SECRET,
        }
    )
    webhooks = OperationalWebhooks(settings, cast(AIOKafkaProducer, StalledProducer()))
    before = lost_events("endpoint.enabled")

    async with asyncio.timeout(5):
        await webhooks.publish_within(endpoint_enabled(disabled_endpoint()), timeout_s=0.05)

    assert lost_events("endpoint.enabled") == before + 1
