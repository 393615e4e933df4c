"""One typed settings object, read from the environment in one place.

Every other module receives a ``Settings`` instance; none reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from shared.model.errors import SettingsError
from shared.model.schedule import (
    MIN_DELAY_S,
    deferral_delays,
    parse_duration_s,
    parse_schedule,
)
from shared.model.signing import is_valid_secret

LogFormat = Literal["json", "console"]
# Kafka's codecs as aiokafka names them ("none": uncompressed); cramjam brings snappy, lz4, zstd.
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
COMPRESSIONS: tuple[Compression, ...] = ("none", "gzip", "snappy", "lz4", "zstd")
# Chosen by measurement (docs/benchmarks/bytes.json): the fewest bytes per click for no more
# CPU per delivery than writing them uncompressed.
DEFAULT_COMPRESSION: Compression = "zstd"
Scope = str

DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"
DELIVERY_LOG_MAX_BYTES = 3 * 1024**3
DELIVERY_LOG_MIN_BYTES = 1024**2  # below a MiB the index holds next to nothing


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A bearer token and what it may do: ``publish``, ``admin`` or ``account:<id>``."""

    token: str = field(repr=False)
    scope: Scope


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    topic_prefix: str = ""
    api_keys: tuple[ApiKey, ...] = field(default=(), repr=False)
    ingest_port: int = 8080
    dispatcher_port: int = 8081
    retry_port: int = 8082
    bind_host: str = "0.0.0.0"  # noqa: S104 - services listen on the pod interface
    retry_schedule_s: tuple[float, ...] = parse_schedule(DEFAULT_RETRY_SCHEDULE)
    delivery_timeout_s: float = 15.0
    allowed_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # The addresses deliveries leave from, as the operator declares them: published by
    # GET /v1/meta for receivers to allowlist (clickhook cannot see its own NAT).
    egress_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_http: bool = False
    log_format: LogFormat = "json"
    log_level: str = "info"
    topic_partitions: int = 6
    topic_replication: int = 1
    max_in_flight: int = 1000
    endpoint_max_in_flight: int = 20
    endpoint_max_queued: int = 1000
    endpoint_max_wait_s: float = 1.0
    attempt_log_enabled: bool = True
    drain_grace_s: float = 20.0
    secret_rotation_grace_s: float = 24 * 3600.0
    breaker_threshold: int = 10
    breaker_cooldown_s: float = 60.0
    breaker_max_cooldown_s: float = 30 * 60.0
    disable_after_s: float = 5 * 86400.0
    max_body_bytes: int = 1024 * 1024
    max_batch_events: int = 1000
    publish_timeout_s: float = 10.0
    kafka_compression: Compression = DEFAULT_COMPRESSION
    # The delivery log (ingest): where its index file lives, how many attempts (and dead
    # letters) it keeps per endpoint, newest first, and how many bytes it may take in all
    # (3 GiB: the manifests give it a 4 GiB volume, the rest for its WAL and headroom).
    state_dir: str = field(default_factory=tempfile.gettempdir)
    # Only a state directory chosen on purpose (CLICKHOOK_STATE_DIR) keeps the index across
    # restarts: in the shared temp directory it is removed at stop, as a cache.
    delivery_log_resumes: bool = False
    delivery_log_per_endpoint: int = 10_000
    delivery_log_max_bytes: int = DELIVERY_LOG_MAX_BYTES
    # The delivery log in PostgreSQL instead of each replica's SQLite file (one store for all
    # ingest replicas): a libpq URL, postgresql://user:password@host/db. Empty: SQLite. It may
    # hold a password: never printed.
    delivery_log_url: str = field(default="", repr=False)
    # The customer portal: the key its links and sessions are signed with (every ingest replica
    # needs the same: hex or base64 of at least 32 random bytes; without one the portal is off),
    # the origins that may show it in a frame, and the public base URL its links start with
    # (else the request's own).
    portal_key: str = field(default="", repr=False)
    portal_frame_ancestors: str = "'none'"
    public_url: str = ""
    # Where operational webhooks go (endpoint.disabled, delivery.exhausted, ...: see
    # shared/model/operational.py), and the secret they are signed with. Empty: none are sent.
    operational_webhook_url: str = ""
    operational_webhook_secret: str = field(default="", repr=False)
    # Where spans go (OTLP over HTTP, the collector's base URL); empty: no spans at all, the
    # trace context only passed on (shared/ops/tracing.py).
    otlp_endpoint: str = ""

    @property
    def deferral_delays_s(self) -> tuple[float, ...]:
        """The waits of deliveries deferred while their endpoint is down: the breaker's
        cool-downs, from CLICKHOOK_BREAKER_COOLDOWN growing to CLICKHOOK_BREAKER_MAX_COOLDOWN."""
        return deferral_delays(self.breaker_cooldown_s, self.breaker_max_cooldown_s)

    @property
    def tier_delays_s(self) -> tuple[float, ...]:
        """Every delay a delivery may wait in a tier topic: the schedule's, then the
        deferrals'."""
        return self.retry_schedule_s + self.deferral_delays_s


DELIVERY_LOG_URL_SCHEMES = ("postgresql://", "postgres://")


def parse_delivery_log_url(raw: str) -> str:
    """A PostgreSQL URL, or empty for the embedded SQLite index; anything else fails at start
    (the URL itself is not echoed: it may carry a password)."""
    url = raw.strip()
    if url and not url.startswith(DELIVERY_LOG_URL_SCHEMES):
        raise SettingsError(
            "CLICKHOOK_DELIVERY_LOG_URL", "(not shown)", "expected postgresql://… or empty"
        )
    return url


OPERATIONAL_URL_SCHEMES = ("https://", "http://")


def parse_operational_webhook(env: Mapping[str, str]) -> tuple[str, str]:
    """The operational webhooks' URL and secret: both or neither, the secret as endpoints'
    are (``whsec_`` and base64 of 24 to 64 bytes); the secret is never echoed."""
    url = (env.get("CLICKHOOK_OPERATIONAL_WEBHOOK_URL") or "").strip()
    secret = (env.get("CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET") or "").strip()
    if not url:
        if secret:
            raise SettingsError(
                "CLICKHOOK_OPERATIONAL_WEBHOOK_URL", "", "is required with its _SECRET"
            )
        return "", ""
    if not url.startswith(OPERATIONAL_URL_SCHEMES):
        raise SettingsError("CLICKHOOK_OPERATIONAL_WEBHOOK_URL", url, "expected https://…")
    if not is_valid_secret(secret):
        raise SettingsError(
            "CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET",
            "(not shown)",
            "expected whsec_ followed by base64 of 24 to 64 bytes",
        )
    return url, secret


OTLP_URL_SCHEMES = ("http://", "https://")


def parse_otlp_endpoint(raw: str) -> str:
    """The OTLP collector's base URL, or empty for tracing off; anything else fails at start."""
    url = raw.strip()
    if url and not url.startswith(OTLP_URL_SCHEMES):
        raise SettingsError(
            "OTEL_EXPORTER_OTLP_ENDPOINT", url, "expected http://… or https://… or empty"
        )
    return url


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, raw, "expected an integer") from None
    if value < minimum:
        raise SettingsError(name, raw, f"must be >= {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(name, raw, "expected true or false")


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_duration_s(raw)
    except ValueError as exc:
        raise SettingsError(name, raw, str(exc)) from None


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """Parse ``token:scope,token:scope``; scope is ``publish``, ``admin`` or ``account:<id>``."""
    keys: list[ApiKey] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        token, sep, scope = item.partition(":")
        if not sep or not token:
            raise SettingsError("CLICKHOOK_API_KEYS", "<hidden>", "each entry is token:scope")
        if scope not in {"publish", "admin"} and not (
            scope.startswith("account:") and len(scope) > len("account:")
        ):
            raise SettingsError(
                "CLICKHOOK_API_KEYS", "<hidden>", f"unknown scope {scope!r} for a token"
            )
        keys.append(ApiKey(token=token, scope=scope))
    return tuple(keys)


def parse_cidrs(
    raw: str, name: str = "CLICKHOOK_ALLOWED_CIDRS"
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError as exc:
        raise SettingsError(name, raw, str(exc)) from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (the process environment by default); fail fast."""
    env = os.environ if env is None else env
    log_format = env.get("CLICKHOOK_LOG_FORMAT", "json") or "json"
    if log_format not in ("json", "console"):
        raise SettingsError("CLICKHOOK_LOG_FORMAT", log_format, "expected json or console")
    compression = env.get("CLICKHOOK_KAFKA_COMPRESSION") or DEFAULT_COMPRESSION
    if compression not in COMPRESSIONS:
        raise SettingsError(
            "CLICKHOOK_KAFKA_COMPRESSION", compression, f"expected one of {', '.join(COMPRESSIONS)}"
        )
    schedule_raw = env.get("CLICKHOOK_RETRY_SCHEDULE") or DEFAULT_RETRY_SCHEDULE
    try:
        schedule = parse_schedule(schedule_raw)
    except ValueError as exc:
        raise SettingsError("CLICKHOOK_RETRY_SCHEDULE", schedule_raw, str(exc)) from None
    breaker_cooldown_s = _duration(env, "CLICKHOOK_BREAKER_COOLDOWN", 60.0)
    breaker_max_cooldown_s = _duration(env, "CLICKHOOK_BREAKER_MAX_COOLDOWN", 30 * 60.0)
    if breaker_cooldown_s < MIN_DELAY_S:
        raise SettingsError(
            "CLICKHOOK_BREAKER_COOLDOWN", str(breaker_cooldown_s), "must be at least 1ms"
        )
    if breaker_max_cooldown_s < breaker_cooldown_s:
        raise SettingsError(
            "CLICKHOOK_BREAKER_MAX_COOLDOWN",
            str(breaker_max_cooldown_s),
            "must be at least CLICKHOOK_BREAKER_COOLDOWN",
        )
    operational_url, operational_secret = parse_operational_webhook(env)
    return Settings(
        kafka_bootstrap=env.get("CLICKHOOK_KAFKA_BOOTSTRAP") or "localhost:9092",
        kafka_compression=compression,
        topic_prefix=env.get("CLICKHOOK_TOPIC_PREFIX", ""),
        api_keys=parse_api_keys(env.get("CLICKHOOK_API_KEYS", "")),
        ingest_port=_int(env, "CLICKHOOK_INGEST_PORT", 8080),
        dispatcher_port=_int(env, "CLICKHOOK_DISPATCHER_PORT", 8081),
        retry_port=_int(env, "CLICKHOOK_RETRY_PORT", 8082),
        bind_host=env.get("CLICKHOOK_BIND_HOST") or "0.0.0.0",  # noqa: S104
        retry_schedule_s=schedule,
        delivery_timeout_s=_duration(env, "CLICKHOOK_DELIVERY_TIMEOUT", 15.0),
        allowed_cidrs=parse_cidrs(env.get("CLICKHOOK_ALLOWED_CIDRS", "")),
        egress_cidrs=parse_cidrs(env.get("CLICKHOOK_EGRESS_CIDRS", ""), "CLICKHOOK_EGRESS_CIDRS"),
        allow_http=_bool(env, "CLICKHOOK_ALLOW_HTTP", False),
        log_format=log_format,  # type: ignore[arg-type]  # checked just above
        log_level=env.get("CLICKHOOK_LOG_LEVEL", "info") or "info",
        topic_partitions=_int(env, "CLICKHOOK_TOPIC_PARTITIONS", 6, minimum=1),
        topic_replication=_int(env, "CLICKHOOK_TOPIC_REPLICATION", 1, minimum=1),
        max_in_flight=_int(env, "CLICKHOOK_MAX_IN_FLIGHT", 1000, minimum=1),
        endpoint_max_in_flight=_int(env, "CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT", 20, minimum=1),
        endpoint_max_queued=_int(env, "CLICKHOOK_ENDPOINT_MAX_QUEUED", 1000),
        endpoint_max_wait_s=_duration(env, "CLICKHOOK_ENDPOINT_MAX_WAIT", 1.0),
        attempt_log_enabled=_bool(env, "CLICKHOOK_ATTEMPT_LOG", True),
        drain_grace_s=_duration(env, "CLICKHOOK_DRAIN_GRACE", 20.0),
        secret_rotation_grace_s=_duration(env, "CLICKHOOK_SECRET_ROTATION_GRACE", 24 * 3600.0),
        breaker_threshold=_int(env, "CLICKHOOK_BREAKER_THRESHOLD", 10, minimum=1),
        breaker_cooldown_s=breaker_cooldown_s,
        breaker_max_cooldown_s=breaker_max_cooldown_s,
        disable_after_s=_duration(env, "CLICKHOOK_DISABLE_AFTER", 5 * 86400.0),
        state_dir=env.get("CLICKHOOK_STATE_DIR") or tempfile.gettempdir(),
        delivery_log_resumes=bool(env.get("CLICKHOOK_STATE_DIR")),
        delivery_log_per_endpoint=_int(
            env, "CLICKHOOK_DELIVERY_LOG_PER_ENDPOINT", 10_000, minimum=100
        ),
        delivery_log_max_bytes=_int(
            env,
            "CLICKHOOK_DELIVERY_LOG_MAX_BYTES",
            DELIVERY_LOG_MAX_BYTES,
            minimum=DELIVERY_LOG_MIN_BYTES,
        ),
        delivery_log_url=parse_delivery_log_url(env.get("CLICKHOOK_DELIVERY_LOG_URL", "")),
        portal_key=env.get("CLICKHOOK_PORTAL_KEY", ""),
        portal_frame_ancestors=env.get("CLICKHOOK_PORTAL_FRAME_ANCESTORS") or "'none'",
        public_url=(env.get("CLICKHOOK_PUBLIC_URL") or "").rstrip("/"),
        operational_webhook_url=operational_url,
        operational_webhook_secret=operational_secret,
        otlp_endpoint=parse_otlp_endpoint(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")),
    )


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """What an operator reads about one variable: the docs' settings table is built from these."""

    name: str
    default: str  # as the operator would write it, or what happens when it is unset
    meaning: str


# One row per variable load_settings reads, in the order an operator meets them; kept next to
# load_settings so that a new setting and its description land together
# (tests/unit/test_settings.py checks both ways).
SETTING_DOCS: tuple[SettingDoc, ...] = (
    SettingDoc("CLICKHOOK_KAFKA_BOOTSTRAP", "`localhost:9092`", "Kafka bootstrap servers"),
    SettingDoc(
        "CLICKHOOK_KAFKA_COMPRESSION",
        f"`{DEFAULT_COMPRESSION}`",
        "the codec of every record batch the services write: `none`, `gzip`, `snappy`, `lz4` "
        "or `zstd` (the default was chosen by measurement: Performance, bytes per click). "
        "aiokafka runs `gzip` at level 9 and `lz4` as LZ4-HC level 9: on the attempt log "
        "each took five times or more the time of `zstd` (level 3) and stored more",
    ),
    SettingDoc("CLICKHOOK_TOPIC_PREFIX", "empty", "prefix for every topic and consumer group"),
    SettingDoc(
        "CLICKHOOK_API_KEYS",
        "empty",
        "`token:scope,…`; scope `publish`, `account:<id>` or `admin`",
    ),
    SettingDoc("CLICKHOOK_INGEST_PORT", "8080", "ingest's HTTP port (API, health, metrics)"),
    SettingDoc("CLICKHOOK_DISPATCHER_PORT", "8081", "the dispatcher's HTTP port (health, metrics)"),
    SettingDoc("CLICKHOOK_RETRY_PORT", "8082", "the retry service's HTTP port (health, metrics)"),
    SettingDoc("CLICKHOOK_BIND_HOST", "`0.0.0.0`", "address the HTTP servers listen on"),
    SettingDoc(
        "CLICKHOOK_RETRY_SCHEDULE",
        f"`{DEFAULT_RETRY_SCHEDULE}`",
        "delays after each failed attempt",
    ),
    SettingDoc("CLICKHOOK_DELIVERY_TIMEOUT", "`15s`", "one attempt, connect and read"),
    SettingDoc(
        "CLICKHOOK_ALLOWED_CIDRS",
        "none",
        "destinations allowed although private (e.g. `127.0.0.0/8` locally)",
    ),
    SettingDoc("CLICKHOOK_ALLOW_HTTP", "`false`", "allow `http://` endpoint URLs"),
    SettingDoc(
        "CLICKHOOK_EGRESS_CIDRS",
        "none",
        "the address ranges deliveries leave from (your NAT gateways), comma-separated CIDRs, "
        "checked at start; published by `GET /v1/meta` for receivers to allowlist",
    ),
    SettingDoc("CLICKHOOK_LOG_FORMAT", "`json`", "`json` or `console`"),
    SettingDoc("CLICKHOOK_LOG_LEVEL", "`info`", "log level"),
    SettingDoc(
        "CLICKHOOK_TOPIC_PARTITIONS",
        "6",
        "partitions of the topics the services create",
    ),
    SettingDoc(
        "CLICKHOOK_TOPIC_REPLICATION",
        "1",
        "replicas of the topics the services create, each with `min.insync.replicas` = "
        "min(2, replication)",
    ),
    SettingDoc("CLICKHOOK_MAX_IN_FLIGHT", "1000", "deliveries in flight per process"),
    SettingDoc(
        "CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT",
        "20",
        "deliveries in flight per endpoint, across all processes (each has its share: 10 each "
        "for one dispatcher and one retry service); more wait briefly or are deferred to the "
        "first tier",
    ),
    SettingDoc(
        "CLICKHOOK_ENDPOINT_MAX_QUEUED",
        "1000",
        "deliveries that may wait for one endpoint's slot (as many as a service has in flight: "
        "a burst to a fast endpoint waits its turn); more are deferred to the first tier",
    ),
    SettingDoc(
        "CLICKHOOK_ENDPOINT_MAX_WAIT",
        "`1s`",
        "the longest such a wait; an endpoint too slow to free a slot in time has its "
        "deliveries deferred to the first tier at once",
    ),
    SettingDoc(
        "CLICKHOOK_ATTEMPT_LOG",
        "`true`",
        "publish every attempt and deferral to `webhook.attempts` (the delivery log; never "
        "delays or repeats a delivery)",
    ),
    SettingDoc("CLICKHOOK_DRAIN_GRACE", "`20s`", "how long SIGTERM waits for in-flight deliveries"),
    SettingDoc(
        "CLICKHOOK_SECRET_ROTATION_GRACE", "`24h`", "how long a rotated-out secret still signs"
    ),
    SettingDoc(
        "CLICKHOOK_BREAKER_THRESHOLD",
        "10",
        "results in a row saying an endpoint is down (no answer, 502/503/504) that open its "
        "breaker",
    ),
    SettingDoc("CLICKHOOK_BREAKER_COOLDOWN", "`60s`", "an open breaker's first cool-down"),
    SettingDoc(
        "CLICKHOOK_BREAKER_MAX_COOLDOWN",
        "`30m`",
        "the longest cool-down (it doubles per failed probe); also the longest deferral tier",
    ),
    SettingDoc(
        "CLICKHOOK_DISABLE_AFTER",
        "`5d`",
        "an endpoint whose every attempt failed this long is disabled",
    ),
    SettingDoc(
        "CLICKHOOK_STATE_DIR",
        "the temp directory",
        "where ingest keeps the delivery log's index; when set, a restart resumes from it "
        "(else it is rebuilt from the topics at every start)",
    ),
    SettingDoc(
        "CLICKHOOK_DELIVERY_LOG_PER_ENDPOINT",
        "10000",
        "attempts (and dead letters) the delivery log keeps per endpoint, newest first "
        "(at least 100)",
    ),
    SettingDoc(
        "CLICKHOOK_DELIVERY_LOG_MAX_BYTES",
        f"{DELIVERY_LOG_MAX_BYTES} (3 GiB)",
        "the most bytes the delivery log's index takes (its WAL up to 64 MiB more); the "
        "oldest rows go first (at least 1 MiB). In PostgreSQL the store's total, the oldest "
        "partitions first (attempts' hours, dead letters' days); over it with only the current "
        "hour (and day) left, the log takes no more records "
        "(its routes answer 503) until there is room: hold what is kept per endpoint (about "
        "3 MB each) and at least two hours of records",
    ),
    SettingDoc(
        "CLICKHOOK_DELIVERY_LOG_URL",
        "empty: SQLite",
        "`postgresql://…`: the delivery log in PostgreSQL, one store for all ingest replicas; "
        "never printed",
    ),
    SettingDoc(
        "CLICKHOOK_PORTAL_KEY",
        "empty: no portal",
        "signs portal links and sessions: hex or base64 of at least 32 random bytes, the same "
        "on every ingest replica; without it the portal is off",
    ),
    SettingDoc(
        "CLICKHOOK_PORTAL_FRAME_ANCESTORS",
        "`'none'`",
        "CSP `frame-ancestors` of the portal: the origins that may embed it",
    ),
    SettingDoc(
        "CLICKHOOK_PUBLIC_URL",
        "empty: the request's scheme and host",
        "the base URL of portal links",
    ),
    SettingDoc(
        "CLICKHOOK_OPERATIONAL_WEBHOOK_URL",
        "empty: none sent",
        "where operational webhooks go (`endpoint.disabled`, `endpoint.enabled`, "
        "`endpoint.recovered`, `delivery.exhausted`), through the same retries and dead "
        "letters as clicks; a private address needs `CLICKHOOK_ALLOWED_CIDRS`",
    ),
    SettingDoc(
        "CLICKHOOK_OPERATIONAL_WEBHOOK_SECRET",
        "required with the URL",
        "signs operational webhooks (Standard Webhooks): `whsec_` and base64 of 24 to 64 "
        "bytes; never printed",
    ),
    SettingDoc(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "empty: no spans",
        "an OTLP/HTTP collector's base URL (spans go to `<url>/v1/traces`): each service "
        "exports spans of each click's publish, deliveries and attempts; unset, the "
        "`traceparent` is only passed on ([tracing](../operations/tracing.md))",
    ),
)
