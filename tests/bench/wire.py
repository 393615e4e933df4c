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


class HttpStream(msgspec.Struct, frozen=True, tag="http_stream"):
    """POST ``count`` single clicks at ``rate_per_s`` (open loop: each on its schedule, not
    after the previous answer), each stamped ``occurred_at`` when it is sent."""

    url: str
    token: str
    account_id: str
    link_ids: list[str]
    count: int
    rate_per_s: float
    connections: int


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


class DeferLoad(msgspec.Struct, frozen=True, tag="defer"):
    """Deliveries deferred through the real ``Deliverer.defer`` (its jitter and its producer)
    into the first tier of ``schedule``, at random moments (Poisson, ``rate_per_s`` on
    average) for ``duration_s``, from ``writers`` concurrent tasks."""

    bootstrap: str
    prefix: str
    schedule: str
    account_id: str
    endpoint_ids: list[str]
    rate_per_s: float
    duration_s: float
    writers: int


class SenderLoad(msgspec.Struct, frozen=True, tag="sender"):
    """The bare sender: ``concurrency`` tasks making signed attempts to ``url`` through the
    webhook client for ``duration_s``: no Kafka, the ceiling of deliveries/s."""

    url: str
    concurrency: int
    duration_s: float
    warmup_s: float


class ProducerLoad(msgspec.Struct, frozen=True, tag="producer"):
    """The bare producer: ``event`` (ingest's batch event, with ids) written to ``topic`` as
    fast as acknowledgements come, with the producer settings ingest uses, for
    ``duration_s``: the ceiling of ingest's events/s."""

    bootstrap: str
    topic: str
    event: str
    key: str
    in_flight: int
    duration_s: float
    warmup_s: float


class DeadLetterLoad(msgspec.Struct, frozen=True, tag="dead_letters"):
    """``count`` dead letters written straight to ``topic`` with the model's encoder: the
    big endpoint holds ``big_count`` of them, the others share the rest."""

    bootstrap: str
    topic: str
    account_id: str
    big_endpoint_id: str
    big_count: int
    other_endpoints: int
    count: int
    dead_at_ms: int


Job = (
    HttpLoad
    | HttpStream
    | ClickLoad
    | EnvelopeLoad
    | DeferLoad
    | SenderLoad
    | ProducerLoad
    | DeadLetterLoad
)


class HttpResult(msgspec.Struct, frozen=True):
    """2xx and other answers inside the measuring window; ``ok_total`` counts the warm-up
    and the last requests too, to match CPU read from outside the window."""

    ok: int
    failed: int
    seconds: float
    ok_total: int
    # Closed loop: each 2xx answer's time from its request sent, inside the window.
    latencies_ms: list[float] = msgspec.field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds


class ProduceResult(msgspec.Struct, frozen=True):
    records: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class GroupLedger(msgspec.Struct):
    """Requests the receiver got under one path group; latency is arrival minus the body's
    reference time (``data.bench_due_ms`` when set, else the webhook ``timestamp``).

    ``refused``: answered 503 (an outage group), ``refused_ids`` the deliveries that were;
    ``arrivals``: webhook-id → its first 200,
    and ``unique``, how many (outage and ids groups); ``in_flight``/``max_in_flight``:
    requests waiting for an answer that is delayed; ``outage_until_s``: when an outage
    group's outage ends."""

    count: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    latencies_ms: list[float] = msgspec.field(default_factory=list)
    refused: int = 0
    refused_ids: set[str] = msgspec.field(default_factory=set)
    unique: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: dict[str, float] = msgspec.field(default_factory=dict)
    outage_until_s: float | None = None


Ledger = dict[str, GroupLedger]
