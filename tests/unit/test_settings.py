"""Settings read from an explicit environment mapping; secrets never shown."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from shared.model.errors import SettingsError
from shared.ops.settings import (
    SETTING_DOCS,
    ApiKey,
    Settings,
    load_settings,
    parse_api_keys,
    parse_cidrs,
)


class ReadRecorder(dict[str, str]):
    """An empty environment that notes every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return default


TOKENS_ENV = {"CLICKHOOK_API_KEYS": "tok-publish-s3cr3t:publish,tok-admin-s3cr3t:admin"}


def test_load_settings_uses_defaults_for_an_empty_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.retry_schedule_s == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    assert settings.allow_http is False
    assert settings.api_keys == ()


def test_load_settings_reads_the_given_mapping_not_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLICKHOOK_INGEST_PORT", "9999")
    assert load_settings({}).ingest_port == 8080


def test_load_settings_treats_empty_values_as_unset() -> None:
    env = {
        "CLICKHOOK_KAFKA_BOOTSTRAP": "",
        "CLICKHOOK_INGEST_PORT": "",
        "CLICKHOOK_ALLOW_HTTP": "",
        "CLICKHOOK_RETRY_SCHEDULE": "",
        "CLICKHOOK_LOG_FORMAT": "",
        "CLICKHOOK_DELIVERY_TIMEOUT": "",
    }
    assert load_settings(env) == Settings()


def test_load_settings_reads_the_documented_variables() -> None:
    env = {
        "CLICKHOOK_KAFKA_BOOTSTRAP": "kafka-0:9092,kafka-1:9092",
        "CLICKHOOK_TOPIC_PREFIX": "staging.",
        "CLICKHOOK_API_KEYS": "tok-a:publish",
        "CLICKHOOK_INGEST_PORT": "9000",
        "CLICKHOOK_DISPATCHER_PORT": "9001",
        "CLICKHOOK_RETRY_PORT": "9002",
        "CLICKHOOK_BIND_HOST": "127.0.0.1",
        "CLICKHOOK_RETRY_SCHEDULE": "1s, 250ms ,1m",
        "CLICKHOOK_DELIVERY_TIMEOUT": "2500ms",
        "CLICKHOOK_ALLOWED_CIDRS": "10.0.0.0/8, fd00::/8",
        "CLICKHOOK_ALLOW_HTTP": "yes",
        "CLICKHOOK_LOG_FORMAT": "console",
        "CLICKHOOK_LOG_LEVEL": "debug",
        "CLICKHOOK_TOPIC_PARTITIONS": "12",
        "CLICKHOOK_TOPIC_REPLICATION": "3",
        "CLICKHOOK_MAX_IN_FLIGHT": "50",
        "CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT": "4",
        "CLICKHOOK_ATTEMPT_LOG": "off",
        "CLICKHOOK_DRAIN_GRACE": "5s",
        "CLICKHOOK_SECRET_ROTATION_GRACE": "2h",
        "CLICKHOOK_BREAKER_THRESHOLD": "3",
        "CLICKHOOK_BREAKER_COOLDOWN": "90s",
        "CLICKHOOK_DISABLE_AFTER": "1d",
        "CLICKHOOK_KAFKA_COMPRESSION": "lz4",
    }
    assert load_settings(env) == dataclasses.replace(
        Settings(),
        kafka_bootstrap="kafka-0:9092,kafka-1:9092",
        topic_prefix="staging.",
        api_keys=(ApiKey(token="tok-a", scope="publish"),),
        ingest_port=9000,
        dispatcher_port=9001,
        retry_port=9002,
        bind_host="127.0.0.1",
        retry_schedule_s=(1.0, 0.25, 60.0),
        delivery_timeout_s=2.5,
        allowed_cidrs=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")),
        allow_http=True,
        log_format="console",
        log_level="debug",
        topic_partitions=12,
        topic_replication=3,
        max_in_flight=50,
        endpoint_max_in_flight=4,
        attempt_log_enabled=False,
        drain_grace_s=5.0,
        secret_rotation_grace_s=7200.0,
        breaker_threshold=3,
        breaker_cooldown_s=90.0,
        disable_after_s=86400.0,
        kafka_compression="lz4",
    )


def test_load_settings_refuses_a_codec_kafka_does_not_have() -> None:
    with pytest.raises(SettingsError, match=r"CLICKHOOK_KAFKA_COMPRESSION.*expected one of none"):
        load_settings({"CLICKHOOK_KAFKA_COMPRESSION": "brotli"})


def test_tracing_is_off_unless_an_otlp_endpoint_is_set() -> None:
    assert load_settings({}).otlp_endpoint == ""
    on = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": " http://127.0.0.1:4318 "})
    assert on.otlp_endpoint == "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("TRUE", True), (" on ", True), ("0", False), ("False", False), ("no", False)],
)
def test_load_settings_reads_booleans(raw: str, value: bool) -> None:
    assert load_settings({"CLICKHOOK_ALLOW_HTTP": raw}).allow_http is value


@pytest.mark.parametrize(
    ("env", "name", "problem"),
    [
        ({"CLICKHOOK_INGEST_PORT": "eighty"}, "CLICKHOOK_INGEST_PORT", "expected an integer"),
        ({"CLICKHOOK_RETRY_PORT": "-1"}, "CLICKHOOK_RETRY_PORT", "must be >= 0"),
        ({"CLICKHOOK_TOPIC_PARTITIONS": "0"}, "CLICKHOOK_TOPIC_PARTITIONS", "must be >= 1"),
        ({"CLICKHOOK_MAX_IN_FLIGHT": "0"}, "CLICKHOOK_MAX_IN_FLIGHT", "must be >= 1"),
        ({"CLICKHOOK_BREAKER_THRESHOLD": "0"}, "CLICKHOOK_BREAKER_THRESHOLD", "must be >= 1"),
        ({"CLICKHOOK_ALLOW_HTTP": "maybe"}, "CLICKHOOK_ALLOW_HTTP", "expected true or false"),
        ({"CLICKHOOK_LOG_FORMAT": "xml"}, "CLICKHOOK_LOG_FORMAT", "expected json or console"),
        ({"CLICKHOOK_RETRY_SCHEDULE": "5s,0s"}, "CLICKHOOK_RETRY_SCHEDULE", "positive"),
        ({"CLICKHOOK_RETRY_SCHEDULE": "5s,soon"}, "CLICKHOOK_RETRY_SCHEDULE", "not a duration"),
        ({"CLICKHOOK_DELIVERY_TIMEOUT": "-3"}, "CLICKHOOK_DELIVERY_TIMEOUT", "negative"),
        ({"CLICKHOOK_DRAIN_GRACE": "20 seconds"}, "CLICKHOOK_DRAIN_GRACE", "not a duration"),
        ({"CLICKHOOK_ALLOWED_CIDRS": "10.0.0.0/33"}, "CLICKHOOK_ALLOWED_CIDRS", "10.0.0.0/33"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "expected http://",
        ),
    ],
)
def test_load_settings_fails_fast_naming_the_variable(
    env: dict[str, str], name: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.name == name
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{name}=")


@pytest.mark.parametrize(
    "env",
    [
        {"CLICKHOOK_RETRY_SCHEDULE": "5s,nan"},
        {"CLICKHOOK_RETRY_SCHEDULE": "inf"},
        {"CLICKHOOK_DELIVERY_TIMEOUT": "nan"},
    ],
)
def test_load_settings_rejects_non_finite_durations(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load_settings(env)


def test_parse_api_keys_reads_tokens_and_scopes() -> None:
    keys = parse_api_keys(" tok-a:publish, tok-b:admin ,tok-c:account:acc_42,")
    assert [(key.token, key.scope) for key in keys] == [
        ("tok-a", "publish"),
        ("tok-b", "admin"),
        ("tok-c", "account:acc_42"),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        "tok-s3cr3t",
        ":publish",
        "tok-s3cr3t:owner",
        "tok-s3cr3t:account:",
        "tok-ok:publish,tok-s3cr3t:",
    ],
)
def test_parse_api_keys_refuses_bad_entries_without_showing_tokens(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_api_keys(raw)
    assert caught.value.name == "CLICKHOOK_API_KEYS"
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.value == "<hidden>"


def test_settings_repr_masks_api_tokens() -> None:
    settings = load_settings(TOKENS_ENV)
    assert len(settings.api_keys) == 2
    assert "s3cr3t" not in repr(settings)
    assert "s3cr3t" not in str(settings)


def test_api_key_repr_masks_the_token() -> None:
    key = ApiKey(token="tok-s3cr3t", scope="admin")
    assert "s3cr3t" not in repr(key)
    assert "admin" in repr(key)


def test_settings_are_immutable() -> None:
    settings = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ingest_port = 1  # type: ignore[misc]


def test_parse_cidrs_normalises_host_bits() -> None:
    assert parse_cidrs("10.1.2.3/8,,2001:db8::1/32") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_every_variable_load_settings_reads_has_a_doc_and_every_doc_a_variable() -> None:
    environment = ReadRecorder()
    load_settings(environment)
    documented = [doc.name for doc in SETTING_DOCS]

    assert len(documented) == len(set(documented)), "a variable documented twice"
    assert environment.asked == set(documented)


def test_every_setting_doc_says_what_it_does_and_its_default() -> None:
    for doc in SETTING_DOCS:
        assert doc.default.strip(), doc.name
        assert doc.meaning.strip(), doc.name
