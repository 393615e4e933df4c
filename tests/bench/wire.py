"""What the bench's processes tell each other: load-generator jobs, their results, and the
receiver's ledger. msgspec structs, sent as JSON over a pipe or HTTP."""

from __future__ import annotations

import msgspec


class HttpLoad(msgspec.Struct, frozen=True, tag="http"):
    """Keep ``concurrency`` keep-alive connections busy POSTing ``body`` for ``duration_s``."""

    url: str
    body: str
    token: str
    concurrency: int
    duration_s: float
    warmup_s: float


class ClickLoad(msgspec.Struct, frozen=True, tag="clicks"):
    """Produce ``count`` click events to ``topic``; ``rate_per_s`` None means a backlog."""

    bootstrap: str
    topic: str
    account_id: str
    link_ids: list[str]
    count: int
    rate_per_s: float | None


class RetryTier(msgspec.Struct, frozen=True):
    topic: str
    index: int
    delay_s: float
    endpoint_ids: list[str]


class EnvelopeLoad(msgspec.Struct, frozen=True, tag="envelopes"):
    """``per_tier`` envelopes into each tier, due from ``delay_s`` on, ``spread_s`` apart."""

    bootstrap: str
    account_id: str
    tiers: list[RetryTier]
    per_tier: int
    spread_s: float


Job = HttpLoad | ClickLoad | EnvelopeLoad


class HttpResult(msgspec.Struct, frozen=True):
    """2xx and other answers inside the measuring window; ``ok_total`` counts the warm-up
    and the last requests too, to match CPU read from outside the window."""

    ok: int
    failed: int
    seconds: float
    ok_total: int

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds


class ProduceResult(msgspec.Struct, frozen=True):
    records: int
    seconds: float


class GroupLedger(msgspec.Struct):
    """Requests the receiver got under one path group; latency is arrival minus the body's
    reference time (``data.bench_due_ms`` when set, else the webhook ``timestamp``)."""

    count: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    latencies_ms: list[float] = msgspec.field(default_factory=list)


Ledger = dict[str, GroupLedger]
