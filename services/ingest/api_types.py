"""Every body the ingest API reads or writes, as msgspec structs.

Requests are decoded and validated by these structs, and responses are built from them; the
OpenAPI document (``openapi.py``) is generated from the same structs, so a limit is written
once and the document cannot drift from what the API enforces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from services.ingest.backfill import MAX_CLICKS, BackfillState
from shared.model.endpoint_extras import CustomHeaders, Metadata
from shared.model.messages import (
    MAX_SIGNATURE_STYLES,
    MAX_STRING_CHARS,
    BreakerState,
    DeadLetterReason,
    DeferralReason,
    EndpointFilters,
    Outcome,
    PayloadFormat,
    ReplayState,
    SignatureStyle,
)
from shared.model.signing import SignatureScheme
from shared.model.templates import MAX_TEMPLATE_BYTES, TEMPLATE_HELP
from shared.model.times import TIME_FORMATS

PositiveRate = Annotated[float, msgspec.Meta(gt=0, le=100_000)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)]
SignatureStyles = Annotated[list[SignatureStyle], msgspec.Meta(max_length=MAX_SIGNATURE_STYLES)]
ClickCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_CLICKS)]
Count = Annotated[int, msgspec.Meta(ge=0)]
# Characters bound the bytes from below; the byte limit itself is checked with the template.
TemplateSource = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_TEMPLATE_BYTES, description=TEMPLATE_HELP)
]
# A time as a request gives it: the formats of shared.model.times, the CLI's and the portal's
# too; handlers turn it into a UTC datetime with parse_api_time, naming the field when it is not.
TimeInput = Annotated[
    str | int,
    msgspec.Meta(
        description=f"a time: {TIME_FORMATS}",
        examples=["24h", "2026-11-27T10:00:00Z", 1764237600000],
    ),
]


# --- requests ---------------------------------------------------------------------------------
# Every request struct, and every struct nested in one, refuses keys it does not know (a 422
# naming the key, e.g. ``filters.tag``): a misspelled field must not be silently dropped.


class EndpointFiltersInput(EndpointFilters, frozen=True, forbid_unknown_fields=True):
    """Which clicks the endpoint receives; empty or absent lists match everything."""


class EndpointCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    description: Description = ""
    filters: EndpointFiltersInput = EndpointFiltersInput()
    rate_limit_per_s: PositiveRate | None = None
    enabled: bool = True
    format: PayloadFormat = "standard"
    template: TemplateSource | None = None  # with format "template" only, and then required
    signature_styles: SignatureStyles = []  # Standard Webhooks headers are always sent
    headers: CustomHeaders = {}
    metadata: Metadata = {}
    secret: str | None = None  # whsec_ + base64 of 24-64 bytes; generated when absent
    account_id: str | None = None  # admin tokens only


class EndpointPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    filters: EndpointFiltersInput | msgspec.UnsetType = msgspec.UNSET
    rate_limit_per_s: PositiveRate | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    format: PayloadFormat | msgspec.UnsetType = msgspec.UNSET
    template: TemplateSource | msgspec.UnsetType | None = msgspec.UNSET
    signature_styles: SignatureStyles | msgspec.UnsetType = msgspec.UNSET
    # Each replaces the whole object: {} removes every custom header, or every key.
    headers: CustomHeaders | msgspec.UnsetType = msgspec.UNSET
    metadata: Metadata | msgspec.UnsetType = msgspec.UNSET


class PreviewRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to preview: the endpoint as stored, or with an unsaved ``format`` and
    ``template``; a sample click, or ``event``."""

    event: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="a click event as POST /v1/clicks takes it; a sample if absent"),
    ] = None
    format: PayloadFormat | msgspec.UnsetType = msgspec.UNSET
    template: TemplateSource | msgspec.UnsetType = msgspec.UNSET


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    since: TimeInput
    until: TimeInput | None = None  # now when absent


class BackfillRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    since: TimeInput
    until: TimeInput | None = None  # now when absent
    max_clicks: ClickCount = MAX_CLICKS


# --- responses --------------------------------------------------------------------------------


class Accepted(msgspec.Struct, kw_only=True):
    accepted: Count
    ids: list[str]


class RotatedSecret(msgspec.Struct, kw_only=True):
    id: str
    secret: str
    previous_secret_expires_at: datetime


class Preview(msgspec.Struct, kw_only=True):
    """The request a click would be delivered with; nothing is sent."""

    body: Annotated[str, msgspec.Meta(description="the body exactly as it would be signed")]
    headers: Annotated[
        dict[str, str],
        msgspec.Meta(description="signed as of now; custom header values masked"),
    ]
    event: Annotated[dict[str, Any], msgspec.Meta(description="the click rendered")]


class ReplayStatus(msgspec.Struct, kw_only=True):
    """A replay job of an endpoint's dead letters, and how far it got."""

    id: str
    endpoint_id: str
    state: ReplayState
    since: datetime
    until: datetime
    matched: Annotated[Count, msgspec.Meta(description="dead letters of the window found")]
    replayed: Annotated[Count, msgspec.Meta(description="of those, put back into delivery")]
    already_replayed: Annotated[
        Count, msgspec.Meta(description="of those, skipped: an earlier replay sent them")
    ]
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: str | None


class BackfillStatus(msgspec.Struct, kw_only=True):
    endpoint_id: str
    state: BackfillState
    since: datetime
    until: datetime
    max_clicks: int
    scanned: Annotated[int, msgspec.Meta(ge=0, description="records of `clicks` read")]
    matched: Annotated[
        int, msgspec.Meta(ge=0, description="clicks of the window this endpoint wants, queued")
    ]
    scheduled: Annotated[
        int, msgspec.Meta(ge=0, description="of those, acknowledged by the broker")
    ]
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    field: str
    problem: str
    index: int | None = None


class ErrorInfo(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: list[ErrorDetail]


class Error(msgspec.Struct, kw_only=True):
    error: ErrorInfo


# --- endpoint import (services/ingest/endpoint_import.py) -------------------------------------

# One request's limits: a bigger file is sent in parts (``clickhook endpoints import`` does).
IMPORT_MAX_LINES = 10_000
IMPORT_MAX_BYTES = 8 * 1024 * 1024


class ImportCreated(msgspec.Struct, kw_only=True):
    """An endpoint the import created: what a single create answers, in short."""

    line: Annotated[int, msgspec.Meta(ge=1, description="the request body's line, from 1")]
    status: Literal[201]
    id: str
    secret: Annotated[str, msgspec.Meta(description="shown once, as for a single create")]
    version: Annotated[int, msgspec.Meta(description="its ETag, without the quotes")]


class ImportFailed(msgspec.Struct, kw_only=True):
    """A line the import refused: the status and error a single create would answer."""

    line: Annotated[int, msgspec.Meta(ge=1, description="the request body's line, from 1")]
    status: Annotated[int, msgspec.Meta(ge=400, le=599)]
    error: ErrorInfo


# --- the delivery log (services/ingest/delivery_log) ------------------------------------------

AttemptStatusFilter = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(success|failure|deferred|[1-5]xx|[1-5][0-9][0-9])$",
        description="success, failure, deferred, a status class such as 5xx, or a status code",
    ),
]


class IndexStatus(msgspec.Struct, kw_only=True):
    """How far this instance's delivery log has read the topics: answers come from what is
    indexed, never wait for the rest."""

    caught_up: bool
    behind: Annotated[int, msgspec.Meta(ge=0, description="records written but not indexed")]
    complete_since: Annotated[
        datetime | None,
        msgspec.Meta(
            description="the log holds every attempt and dead letter since this time, of"
            " every endpoint (within its per-endpoint cap); older ones are still being read (a"
            " fresh instance reads the newest hour first) or no longer fit the log's byte"
            " budget. null: it holds all the topics keep"
        ),
    ] = None


class Attempt(msgspec.Struct, kw_only=True):
    """One attempt to deliver an event to an endpoint, or a deferral (no request made)."""

    id: str
    webhook_id: str
    event_id: str
    endpoint_id: str
    attempt: Annotated[int, msgspec.Meta(description="the attempt's number, from 1")]
    at: datetime
    outcome: Outcome
    status: int | None
    duration_ms: float
    error: str | None
    response_body: Annotated[str | None, msgspec.Meta(description="its first 1 KiB")]
    next_attempt_at: Annotated[
        datetime | None, msgspec.Meta(description="when it is tried again, while it waits")
    ]
    dead_letter_reason: Annotated[
        DeadLetterReason | None, msgspec.Meta(description="set once the delivery is dead")
    ]
    deferred_because: DeferralReason | None
    breaker: Annotated[
        BreakerState | None, msgspec.Meta(description="the endpoint's breaker after it")
    ]


class AttemptDetail(Attempt, kw_only=True):
    """An attempt with what was sent, read back from ``webhook.attempts``."""

    request_headers: dict[str, str] | None
    request_body: Annotated[str | None, msgspec.Meta(description="its first 4 KiB")]
    request_available: Annotated[
        bool, msgspec.Meta(description="false once the record left the topic's retention")
    ]


class AttemptPage(msgspec.Struct, kw_only=True):
    data: list[Attempt]
    next_cursor: Annotated[
        str | None, msgspec.Meta(description="pass as `cursor` for the next (older) page")
    ]
    index: IndexStatus


class Durations(msgspec.Struct, kw_only=True):
    p50_ms: float | None
    p99_ms: float | None


class WindowStats(msgspec.Struct, kw_only=True):
    attempts: Count
    successes: Count
    failures: Annotated[
        dict[str, int],
        msgspec.Meta(description="failed attempts by status class (5xx) or outcome (timeout)"),
    ]
    deferred: Annotated[int, msgspec.Meta(ge=0, description="waits without a request")]
    success_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] | None
    duration: Durations


class LastError(msgspec.Struct, kw_only=True):
    at: datetime
    webhook_id: str
    outcome: Outcome
    status: int | None
    error: str | None
    recovered_at: Annotated[
        datetime | None,
        msgspec.Meta(
            description="the first success after this error; set only when the endpoint's"
            " latest attempt succeeded (it has recovered), null while it still fails"
        ),
    ] = None


class EndpointStats(msgspec.Struct, kw_only=True):
    endpoint_id: str
    last_hour: WindowStats
    last_24h: WindowStats
    breaker: BreakerState | None
    waiting: Annotated[int, msgspec.Meta(ge=0, description="deliveries waiting in retry tiers")]
    dead_letters_open: Annotated[int, msgspec.Meta(ge=0, description="dead, not replayed")]
    last_error: LastError | None
    index: IndexStatus


class DeliverySummary(msgspec.Struct, kw_only=True):
    """The endpoint's delivery health in short (``GET /v1/endpoints/{id}``)."""

    attempts_24h: Count
    success_rate_24h: float | None
    breaker: BreakerState | None
    waiting: Count
    dead_letters_open: Count
    last_error: LastError | None


class HistoryAttempt(msgspec.Struct, kw_only=True):
    attempt: int
    at: datetime
    outcome: Outcome
    status: int | None
    duration_ms: float
    error: str | None
    response_body: str | None


DeliveryState = Literal["waiting", "delivered", "dead"]


class DeadLetterView(msgspec.Struct, kw_only=True):
    id: str
    webhook_id: str
    event_id: str
    reason: DeadLetterReason
    dead_at: datetime
    attempts: list[HistoryAttempt]
    replayed: Annotated[bool, msgspec.Meta(description="a replay job has put it back")]
    replay_id: str | None
    delivery: Annotated[
        DeliveryState, msgspec.Meta(description="where the delivery stands now, per the log")
    ]


class DeadLetterPage(msgspec.Struct, kw_only=True):
    data: list[DeadLetterView]
    next_cursor: str | None
    index: IndexStatus


class SentTestEvent(msgspec.Struct, kw_only=True):
    endpoint_id: str
    event_id: str
    webhook_id: Annotated[str, msgspec.Meta(description="follow it in the delivery log")]


# --- the portal (services/ingest/portal) -------------------------------------------------------


class PortalSessionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    account_id: Annotated[str | None, msgspec.Meta(description="admin tokens only")] = None


class PortalSession(msgspec.Struct, kw_only=True):
    url: Annotated[str, msgspec.Meta(description="open once, before expires_at")]
    expires_at: datetime


# --- GET /v1/meta (services/ingest/meta_api.py) ---------------------------------------------


class RetrySchedule(msgspec.Struct, kw_only=True):
    delays_s: Annotated[
        list[float], msgspec.Meta(description="the wait after each failed attempt, in seconds")
    ]
    written: Annotated[str, msgspec.Meta(description="as CLICKHOOK_RETRY_SCHEDULE writes it")]
    attempts: Annotated[int, msgspec.Meta(ge=1, description="attempts before a dead letter")]


class ServiceMeta(msgspec.Struct, kw_only=True):
    """What a receiver may want to know about this clickhook, without a token."""

    version: Annotated[str, msgspec.Meta(description="clickhook's package version")]
    egress_cidrs: Annotated[
        list[str],
        msgspec.Meta(
            description="the address ranges webhook requests come from (CLICKHOOK_EGRESS_CIDRS,"
            " as the operator declares them); empty when undeclared"
        ),
    ]
    signature_schemes: list[SignatureScheme]
    retry_schedule: RetrySchedule
    event_types: Annotated[
        list[str],
        msgspec.Meta(
            description="the event types clickhook defines; a shortener may publish others"
        ),
    ]
