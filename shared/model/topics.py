"""Topic, header and group names: the one place they are spelled."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.model.schedule import duration_label

CLICKS = "clicks"
CLICKS_INVALID = "clicks.invalid"
ENDPOINTS = "webhook.endpoints"
RETRY_PREFIX = "webhook.retry."
DLQ = "webhook.dlq"
ATTEMPTS = "webhook.attempts"
REPLAYS = "webhook.replays"
# Never written: its partitions, shared out by the CAPS_GROUP, are each delivering process's
# share of every endpoint's caps (shared/model/caps.py).
CAPS = "webhook.caps"

DISPATCHER_GROUP = "clickhook-dispatcher"
RETRY_GROUP = "clickhook-retry"
CAPS_GROUP = "clickhook-caps"
# The ingest replicas that fill the delivery log's PostgreSQL store, each a share of the topics.
DELIVERY_LOG_GROUP = "clickhook-delivery-log"

HEADER_REASON = "clickhook-reason"
HEADER_SOURCE = "clickhook-source"
HEADER_DUE_AT_MS = "clickhook-due-at-ms"
# On a ``clicks`` record: deliver it to this endpoint only, whatever its filters (test events).
HEADER_ENDPOINT = "clickhook-endpoint"
# On a ``clicks`` record ingest accepted: how far its endpoint table had read ``webhook.endpoints``
# (the offset past the newest record it held). The dispatcher routes the click with a table read
# at least as far, so an endpoint whose create (or change) was answered before the click was
# accepted sees the click.
HEADER_ENDPOINTS_AT = "clickhook-endpoints-at"
# Offsets and epoch milliseconds are 64-bit integers: no more digits than this. A longer value is
# not one (and Python refuses to convert past 4,300 digits: the record would fail each time).
MAX_INT64_DIGITS = 19


def header_value(headers: Iterable[tuple[str, bytes | None]], name: str) -> str | None:
    """A record header's value as text; None when absent (or not UTF-8)."""
    for key, value in headers:
        if key == name and value is not None:
            try:
                return value.decode()
            except UnicodeDecodeError:
                return None
    return None


def endpoints_at_headers(stamp: int | None) -> list[tuple[str, bytes]]:
    """A click's ``clickhook-endpoints-at`` header; none without a stamp."""
    return [] if stamp is None else [(HEADER_ENDPOINTS_AT, str(stamp).encode())]


def header_int(headers: Iterable[tuple[str, bytes | None]], name: str) -> int | None:
    """A header's value as a non-negative decimal integer of 64 bits at most; None when absent
    or not one (a producer may set anything)."""
    value = header_value(headers, name)
    if value is None or len(value) > MAX_INT64_DIGITS:
        return None
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def endpoints_at(headers: Iterable[tuple[str, bytes | None]]) -> int | None:
    """The ``clickhook-endpoints-at`` offset of a click; None when absent or not an offset (a
    producer of its own may set anything: the click is then routed as one without it)."""
    return header_int(headers, HEADER_ENDPOINTS_AT)


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names with the deployment's prefix applied."""

    prefix: str = ""

    @property
    def clicks(self) -> str:
        return self.prefix + CLICKS

    @property
    def clicks_invalid(self) -> str:
        return self.prefix + CLICKS_INVALID

    @property
    def endpoints(self) -> str:
        return self.prefix + ENDPOINTS

    @property
    def dlq(self) -> str:
        return self.prefix + DLQ

    @property
    def attempts(self) -> str:
        return self.prefix + ATTEMPTS

    @property
    def replays(self) -> str:
        return self.prefix + REPLAYS

    @property
    def caps(self) -> str:
        return self.prefix + CAPS

    @property
    def retry_pattern(self) -> str:
        """Regex matching every retry tier topic, including tiers of an older schedule."""
        return "^" + (self.prefix + RETRY_PREFIX).replace(".", r"\.") + r"[0-9]+(ms|s|m|h|d)$"

    def group(self, name: str) -> str:
        """Consumer groups share the prefix, so deployments on one cluster stay apart."""
        return self.prefix + name

    def retry(self, delay_s: float) -> str:
        return f"{self.prefix}{RETRY_PREFIX}{duration_label(delay_s)}"

    def retry_tiers(self, schedule_s: tuple[float, ...]) -> list[str]:
        """Distinct tier topics of a schedule, in schedule order."""
        return list(dict.fromkeys(self.retry(delay) for delay in schedule_s))

    def every(self, tier_delays_s: tuple[float, ...]) -> list[str]:
        """Every topic of the deployment: the fixed ones and the tiers of these delays."""
        fixed = [self.clicks, self.clicks_invalid, self.endpoints, self.dlq, self.attempts]
        return [*fixed, self.replays, self.caps, *self.retry_tiers(tier_delays_s)]
