"""Every message that crosses Kafka or HTTP, as typed structs, and their one codec.

Click events keep unknown fields: the validated view (``ClickEvent``) travels with the
original object (``payload``) so receivers get exactly what the shortener sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol, get_args, get_origin

import msgspec

from shared.model.errors import InvalidClick, InvalidInput, Problem

SCHEMA_VERSION = 1

MAX_ID_CHARS = 200
MAX_TYPE_CHARS = 100
MAX_STRING_CHARS = 8192
MAX_TAGS = 100
MAX_TAG_CHARS = 200
MAX_FUTURE_SKEW = timedelta(hours=1)
MIN_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
ShortString = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)]
Tag = Annotated[str, msgspec.Meta(max_length=MAX_TAG_CHARS)]


# --- click events -------------------------------------------------------------------------

# The event types clickhook itself defines (GET /v1/meta); a shortener may publish others,
# which are delivered as they are.
CLICK_EVENT_TYPE = "link.clicked"
EVENT_TYPES = (CLICK_EVENT_TYPE,)


class LinkFields(msgspec.Struct, frozen=True):
    id: Id
    domain: ShortString | None = None
    key: ShortString | None = None
    url: ShortString | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=MAX_TAGS)] = []


class ClickFields(msgspec.Struct, frozen=True):
    """The fields clickhook relies on; everything else passes through untouched."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TYPE_CHARS)]
    account_id: Id
    occurred_at: datetime
    link: LinkFields
    id: Id | None = None


class ClickEvent(msgspec.Struct, frozen=True):
    """A validated click: the fields routing needs, and the whole original object."""

    id: str
    type: str
    account_id: str
    occurred_at: datetime
    link_id: str
    domain: str | None
    tags: tuple[str, ...]
    payload: dict[str, Any]


_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_RFC3339 = "%Y-%m-%dT%H:%M:%SZ"
_SKEW_HOURS = MAX_FUTURE_SKEW / timedelta(hours=1)
FUTURE_SKEW_TEXT = f"{_SKEW_HOURS:g} hour{'' if _SKEW_HOURS == 1 else 's'}"


def _problem_from(exc: msgspec.ValidationError, index: int | None, at: str = "") -> Problem:
    """A msgspec error as a field path and a problem: ``link.id`` / ``is required``."""
    text = str(exc)
    match = _PATH.search(text)
    inner = match.group("path") if match else ""
    path = (at + inner).lstrip(".")
    message = _PATH.sub("", text)
    for pattern, problem in ((_MISSING, "is required"), (_UNKNOWN, "unknown field")):
        named = pattern.match(message)
        if named is not None:
            path = f"{path}.{named.group('name')}" if path else named.group("name")
            message = problem
    return Problem(field=path or "$", problem=message, index=index)


def validation_problem(exc: msgspec.ValidationError) -> Problem:
    """What a strict request struct refused, named by its path: ``filters.tag`` / ``unknown
    field``, ``url`` / ``is required``."""
    return _problem_from(exc, None)


@dataclass(frozen=True, slots=True)
class _FieldCheck:
    """One field of a struct, checked on its own: its type as the struct declares it (so each
    limit is written once, on the struct), and for a nested struct or a list, how to look inside
    so that every problem in it is found, not only the first."""

    name: str
    type: Any
    required: bool
    nested: tuple[_FieldCheck, ...] | None = None  # the fields of a struct-typed field
    container: Any = None  # a list field's own constraints, its items as Any
    item: Any = None  # a list field's item type


def _field_checks(struct: type[msgspec.Struct]) -> tuple[_FieldCheck, ...]:
    checks: list[_FieldCheck] = []
    for field in msgspec.structs.fields(struct):
        kind, metas = field.type, ()
        if get_origin(kind) is Annotated:
            kind, *rest = get_args(kind)
            metas = tuple(rest)
        check = _FieldCheck(field.name, field.type, field.required)
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            check = replace(check, nested=_field_checks(kind))
        elif get_origin(kind) is list:
            (item,) = get_args(kind)
            container = Annotated[list[Any], *metas] if metas else list[Any]
            check = replace(check, container=container, item=item)
        checks.append(check)
    return tuple(checks)


def _check_fields(
    obj: dict[str, Any], checks: tuple[_FieldCheck, ...], index: int | None, at: str = ""
) -> tuple[dict[str, Any], list[Problem]]:
    """Each field converted on its own: the values that passed, and every problem found."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for check in checks:
        path = at + check.name
        if check.name not in obj:
            if check.required:
                problems.append(Problem(path, "is required", index))
            continue
        value = obj[check.name]
        if check.nested is not None and isinstance(value, dict):
            _, inner = _check_fields(value, check.nested, index, path + ".")
            problems.extend(inner)
            continue
        if check.item is not None and isinstance(value, list):
            problems.extend(_check_list(value, check, index, path))
            continue
        try:
            values[check.name] = msgspec.convert(value, check.type, strict=True)
        except msgspec.ValidationError as exc:
            problems.append(_problem_from(exc, index, path))
    return values, problems


def _check_list(
    value: list[Any], check: _FieldCheck, index: int | None, path: str
) -> list[Problem]:
    try:
        msgspec.convert(value, check.container, strict=True)
    except msgspec.ValidationError as exc:
        return [_problem_from(exc, index, path)]
    problems: list[Problem] = []
    for position, item in enumerate(value):
        try:
            msgspec.convert(item, check.item, strict=True)
        except msgspec.ValidationError as exc:
            problems.append(_problem_from(exc, index, f"{path}[{position}]"))
    return problems


_CLICK_CHECKS = _field_checks(ClickFields)


def _rule_problems(
    occurred_at: datetime | None, event_id: str | None, now: datetime, index: int | None
) -> list[Problem]:
    """The rules beyond the types: a plausible time, and an id (``None``: there is none)."""
    problems: list[Problem] = []
    if occurred_at is not None:
        if occurred_at.tzinfo is None:
            problems.append(Problem("occurred_at", "needs a UTC offset, e.g. Z", index))
        elif occurred_at < MIN_OCCURRED_AT:
            since = MIN_OCCURRED_AT.strftime(_RFC3339)
            problems.append(Problem("occurred_at", f"must be at or after {since}", index))
        elif occurred_at > now + MAX_FUTURE_SKEW:
            rule = f"must be at most {FUTURE_SKEW_TEXT} after now ({now.strftime(_RFC3339)})"
            problems.append(Problem("occurred_at", rule, index))
    if event_id is None:
        problems.append(Problem("id", "is required", index))
    return problems


def validate_click(
    obj: object, *, now: datetime, index: int | None = None, default_id: str | None = None
) -> ClickEvent:
    """Validate one decoded click object; raise ``InvalidInput`` listing every problem.

    ``default_id`` is assigned when the event has no ``id`` (ingest does this); without it a
    missing id is an error, since the dispatcher needs one to derive a stable webhook id.
    """
    if not isinstance(obj, dict):
        problem = Problem("$", f"expected a JSON object, got {type(obj).__name__}", index)
        raise InvalidInput("invalid click event", [problem])
    try:
        fields = msgspec.convert(obj, ClickFields, strict=True)
    except msgspec.ValidationError as exc:
        # msgspec stops at the first problem: only then is each field checked on its own, so
        # a valid event pays for one conversion and an invalid one learns all that is wrong.
        values, problems = _check_fields(obj, _CLICK_CHECKS, index)
        # An id of the wrong type already has its problem: "is required" would be one too many.
        id_problem = any(problem.field == "id" for problem in problems)
        event_id = values.get("id") or default_id or ("" if id_problem else None)
        problems += _rule_problems(values.get("occurred_at"), event_id, now, index)
        raise InvalidInput("invalid click event", problems or [_problem_from(exc, index)]) from None
    event_id = fields.id or default_id
    problems = _rule_problems(fields.occurred_at, event_id, now, index)
    if problems:
        raise InvalidInput("invalid click event", problems)
    assert event_id is not None  # for mypy: no problem means an id
    payload = obj if fields.id else {**obj, "id": event_id}
    return ClickEvent(
        id=event_id,
        type=fields.type,
        account_id=fields.account_id,
        occurred_at=fields.occurred_at,
        link_id=fields.link.id,
        domain=fields.link.domain,
        tags=tuple(fields.link.tags),
        payload=payload,
    )


# Far below the codec's recursion limit (~1000 levels, less the caller's stack), so every body,
# envelope and dead letter that wraps a decoded event still encodes.
MAX_JSON_DEPTH = 64
# Ingest's body limit: a click it would refuse with a 413 is set aside when produced directly.
MAX_CLICK_BYTES = 1024 * 1024


def nested_deeper_than(obj: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels; breadth-first, no recursion."""
    level = [obj] if isinstance(obj, (dict, list)) else []
    for _ in range(limit):
        if not level:
            return False
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
    return bool(level)


def decode_json(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON bytes; raises ``InvalidInput`` on bad UTF-8, syntax, NaN or nesting deeper
    than ``max_depth``."""
    try:
        obj = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput("malformed JSON", [Problem("$", str(exc))]) from None
    except RecursionError:
        raise InvalidInput("malformed JSON", [_too_deep(max_depth)]) from None
    # Nesting never goes deeper than the number of brackets: most values need no walk.
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > max_depth and nested_deeper_than(obj, max_depth):
        raise InvalidInput("malformed JSON", [_too_deep(max_depth)])
    return obj


def _too_deep(max_depth: int) -> Problem:
    return Problem("$", f"nested more than {max_depth} levels deep")


_ARRAY_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])


def decode_json_items(raw: bytes) -> list[Any]:
    """A JSON array's items, or the one value that is not an array, as a list; raises as
    ``decode_json`` does for the whole.

    An array is decoded item by item, each within the depth left inside the array: a batch of
    clicks has more brackets than the depth limit, so decoded whole it was walked value by
    value, which cost as much as decoding it (8 % of ingest's samples on batches of 100).
    Anything amiss is decoded whole again, so that the error is the one for the whole body.
    """
    try:
        items = _ARRAY_ITEMS.decode(raw)
        return [decode_json(bytes(item), max_depth=MAX_JSON_DEPTH - 1) for item in items]
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, InvalidInput):
        pass  # not an array, or not a valid one: decoded whole, which says why
    decoded = decode_json(raw)
    return decoded if isinstance(decoded, list) else [decoded]


def position_event_id(topic: str, partition: int, offset: int) -> str:
    """The id of a click produced to Kafka without one: from where it is stored, so that every
    read of it (a redelivery, a replica, a replay, a backfill) gives the same ``webhook-id``."""
    return f"evt_{topic}-{partition}-{offset}"


class StoredRecord(Protocol):
    """What a click read from Kafka is decoded from (aiokafka's ``ConsumerRecord`` is one)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


def decode_stored_click(record: StoredRecord, *, now: datetime) -> ClickEvent:
    """A click read from ``clicks``, with ``position_event_id`` when it came without an id."""
    default_id = position_event_id(record.topic, record.partition, record.offset)
    return decode_click(record.value, now=now, default_id=default_id)


def decode_click(raw: bytes | None, *, now: datetime, default_id: str | None = None) -> ClickEvent:
    """A ``clicks`` record's value as a click; raises ``InvalidClick`` saying why it is not."""
    if raw is None:
        raise InvalidClick(
            "null_value", "null record value", [Problem("$", "the record has no value")]
        )
    if len(raw) > MAX_CLICK_BYTES:
        problem = f"is {len(raw)} bytes, more than {MAX_CLICK_BYTES}"
        raise InvalidClick("too_large", "click too large", [Problem("$", problem)])
    try:
        obj = decode_json(raw)
    except InvalidInput as exc:
        raise InvalidClick("malformed_json", exc.message, exc.problems) from None
    try:
        return validate_click(obj, now=now, default_id=default_id)
    except InvalidInput as exc:
        raise InvalidClick("invalid_event", exc.message, exc.problems) from None


# --- endpoints ----------------------------------------------------------------------------

# How a delivery's body is rendered (shared/model/formats.py); every format is signed the same way.
# "template" renders the endpoint's own Liquid template (shared/model/templates.py).
PayloadFormat = Literal["standard", "slack", "discord", "teams", "ifttt", "template"]
# Signature headers sent besides the Standard Webhooks ones, for receivers that already verify
# GitHub's or Dub's (shared/model/signing.py).
SignatureStyle = Literal["github", "dub"]
MAX_SIGNATURE_STYLES = 2


class EndpointFilters(msgspec.Struct, frozen=True, omit_defaults=True):
    """Empty or absent lists match everything.

    Tolerant of keys it does not know, as every struct read back from a topic is: a field added
    by a newer writer must not make an older reader drop the endpoint. The API refuses unknown
    keys with its own strict subclass (``services/ingest/api_types.py``).
    """

    event_types: list[Tag] | None = None
    link_ids: list[Tag] | None = None
    domains: list[Tag] | None = None
    tags: list[Tag] | None = None


class EndpointSecret(msgspec.Struct, frozen=True, omit_defaults=True):
    secret: str
    expires_at: datetime | None = None


# The version of an endpoint not read from the topic (offsets start at 0).
NO_VERSION = -1
# How a write-only value (a custom header's) is shown.
MASK = "••••"


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A receiver registered by an account. Stored in the compacted ``webhook.endpoints``."""

    v: int = SCHEMA_VERSION
    id: str
    account_id: str
    url: str
    description: str = ""
    filters: EndpointFilters = EndpointFilters()
    rate_limit_per_s: float | None = None
    enabled: bool = True
    disabled_reason: str | None = None
    secrets: list[EndpointSecret]
    format: PayloadFormat = "standard"
    # The Liquid source of the body when ``format`` is "template"; checked when written
    # (it parses, and renders a sample click to JSON within the limits).
    template: str | None = None
    signature_styles: list[SignatureStyle] = []
    # Checked when written (shared/model/endpoint_extras.py), not when read: a record written
    # under other limits still loads.
    headers: Annotated[
        dict[str, str],
        msgspec.Meta(description=f"the custom headers' names; values are write-only: {MASK}"),
    ] = {}
    metadata: dict[str, str] = {}
    created_at: datetime
    updated_at: datetime
    # The offset in ``webhook.endpoints`` of the write that made this state: its ETag. Set by
    # the reader that accepted the record (``EndpointTable``), never stored in the record,
    # which cannot know its own offset (``encode_endpoint`` leaves it out).
    version: Annotated[
        int, msgspec.Meta(description="changes with every write; the ETag, for If-Match")
    ] = NO_VERSION

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret first, then rotated-out ones still inside their grace period."""
        return [s.secret for s in self.secrets if s.expires_at is None or s.expires_at > now]

    def public_view(self) -> dict[str, Any]:
        """The endpoint as the API shows it: no secrets, no internal fields, no header values."""
        view: dict[str, Any] = msgspec.to_builtins(self)
        view.pop("secrets")
        view.pop("v")
        view["headers"] = dict.fromkeys(self.headers, MASK)
        return view


# --- deliveries ---------------------------------------------------------------------------

Outcome = Literal[
    "success",
    "http_3xx",
    "http_4xx",
    "http_5xx",
    "http_429",
    "gone",
    "timeout",
    "connect_error",
    "tls_error",
    "refused_destination",
    "error",
    # Not an attempt: the delivery was put back to wait without one (see ``DeferralReason``).
    "deferred",
]
# Why a delivery waited without an attempt: its endpoint was at its concurrency or rate caps,
# known to be down (its breaker open), or the service stopped before the attempt could end.
DeferralReason = Literal["endpoint_busy", "breaker_open", "draining"]
BreakerState = Literal["closed", "open", "half_open"]
# ``endpoint_busy``: held back by its endpoint's concurrency or rate caps for longer than the
# whole retry schedule (``shared.model.schedule.waited_too_long``), without an attempt.
DeadLetterReason = Literal[
    "exhausted", "endpoint_gone", "endpoint_deleted", "endpoint_disabled", "endpoint_busy"
]
# The first bytes of a request body kept in the delivery log.
LOGGED_BODY_CHARS = 4096


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the delivery log (``webhook.attempts``): an attempt, or a deferral
    (``outcome="deferred"``, no request made). Attempts are also kept on the envelope's
    history, without the request fields (``request_headers``, ``request_body``).

    What happens next is on the record: ``next_attempt_at_ms`` while the delivery waits in a
    retry tier, ``dead_letter_reason`` once it is dead; neither after a success.
    """

    v: int = SCHEMA_VERSION
    webhook_id: str
    event_id: str
    endpoint_id: str
    account_id: str
    # The attempt's number, from 1; for a deferral, the number of the attempt still to come.
    attempt: int
    at_ms: int
    duration_ms: float
    outcome: Outcome
    status: int | None = None
    error: str | None = None
    response_body: str | None = None
    next_attempt_at_ms: int | None = None
    dead_letter_reason: DeadLetterReason | None = None
    deferred_because: DeferralReason | None = None
    # Which run of the delivery an attempt belongs to: the endpoint's version it was made
    # under and the replay job that sent it, if any. A failure streak counts only attempts of
    # the current run (``shared.model.routing.failure_streak_start_ms``). None on records
    # written before these fields existed.
    endpoint_version: int | None = None
    replay_id: str | None = None
    # The endpoint's breaker after this record, as the service that wrote it saw it.
    breaker: BreakerState | None = None
    service: str | None = None
    request_headers: dict[str, str] | None = None
    request_body: str | None = None  # the first LOGGED_BODY_CHARS characters
    # Set instead of ``request_body`` when an earlier attempt of the same run sent the same
    # body: that attempt's number, whose record holds it (one copy per run, not per attempt).
    # None on records that carry their body, and on records written before this field.
    request_body_of: int | None = None


def body_sent_by(
    history: list[AttemptRecord], endpoint_version: int | None, replay_id: str | None
) -> int | None:
    """The number of the run's first attempt in ``history``, whose record in the delivery log
    holds the request body that every later attempt of the run sends again: the body depends
    only on the event and the endpoint's format, which a new endpoint version may change (and a
    replay starts a run of its own). None when this attempt is the run's first."""
    if endpoint_version is None:
        return None
    for earlier in history:
        if earlier.endpoint_version == endpoint_version and earlier.replay_id == replay_id:
            return earlier.attempt
    return None


class DeliveryEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery waiting in a retry tier: the event, where it goes, and its history."""

    v: int = SCHEMA_VERSION
    webhook_id: str
    event_id: str
    endpoint_id: str
    account_id: str
    event: dict[str, Any]
    attempts_made: int
    tier: int
    due_at_ms: int
    attempts: list[AttemptRecord] = []
    # How many times it waited without an attempt in a row (each wait is longer).
    deferrals: int = 0
    # Set when a replay job put it back into delivery: a fresh chance for its endpoint.
    replay_id: str | None = None
    # Since when it has been held back by its endpoint's caps without an attempt (the first of
    # those deferrals in a row); an attempt clears it. Past the whole retry schedule it is
    # dead-lettered ``endpoint_busy``.
    busy_since_ms: int | None = None


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    v: int = SCHEMA_VERSION
    reason: DeadLetterReason
    dead_at_ms: int
    envelope: DeliveryEnvelope


class _EnvelopeTarget(msgspec.Struct, frozen=True):
    endpoint_id: str


class DeadLetterHead(msgspec.Struct, frozen=True):
    """Of a stored ``DeadLetter``, whose it is and when it died, and nothing else: a replay
    reads every letter of its endpoint's partition, most of them other endpoints', and decoding
    those whole (the event, the history) was most of what it spent on them. Any record that
    decodes as a ``DeadLetter`` decodes as this."""

    dead_at_ms: int
    envelope: _EnvelopeTarget

    @property
    def endpoint_id(self) -> str:
        return self.envelope.endpoint_id


ReplayState = Literal["running", "completed", "cancelled", "failed", "interrupted"]
# A running job's owner writes its progress at least this often; a running job not updated for
# REPLAY_STALE_AFTER_MS is taken as interrupted (its process stopped).
REPLAY_HEARTBEAT_MS = 2_000
REPLAY_STALE_AFTER_MS = 30_000


class ReplayJob(msgspec.Struct, frozen=True, kw_only=True):
    """One replay of an endpoint's dead letters, as kept in the compacted ``webhook.replays``
    (key: the job id), so that every instance, the CLI and the delivery log see it.

    Dead letters are keyed by endpoint id, so all of one endpoint's are in one partition of
    ``webhook.dlq`` (``dlq_partition``). The job replays the open letters of its window below
    ``end_offset`` (the partition's end when it started), in offset order; ``position`` is how
    far it got. A letter died in ``[since_ms, until_ms)`` at an offset below ``position`` of a
    job of its endpoint has been replayed; any other letter is open.
    """

    v: int = SCHEMA_VERSION
    id: str
    endpoint_id: str
    account_id: str
    since_ms: int
    until_ms: int
    dlq_partition: int
    end_offset: int
    position: int
    state: ReplayState
    matched: int = 0
    replayed: int = 0
    already_replayed: int = 0
    started_at_ms: int
    updated_at_ms: int
    finished_at_ms: int | None = None
    error: str | None = None
    # Which process runs it; a running job whose owner stopped reporting is ``interrupted``.
    owner: str = ""
    # In a reader's view: a cancel was asked for (a ``ReplayCancel`` record, from any instance
    # or the CLI); the owner stops at its next heartbeat. Records of older versions may carry
    # it too. Never cleared once set (``shared.model.replays.merge_job``).
    cancel_requested: bool = False

    def covers(self, offset: int, dead_at_ms: int) -> bool:
        """Whether this job replayed the letter at ``offset`` that died at ``dead_at_ms``."""
        return offset < self.position and self.since_ms <= dead_at_ms < self.until_ms

    def state_at(self, now_ms: int) -> ReplayState:
        """The state as of ``now_ms``: a running job whose owner went silent is interrupted."""
        if self.state == "running" and now_ms - self.updated_at_ms > REPLAY_STALE_AFTER_MS:
            return "interrupted"
        return self.state


class ReplayCancel(msgspec.Struct, frozen=True, kw_only=True):
    """A request to stop a running replay job, kept in ``webhook.replays`` under a key of its
    own (``cancel:<job id>``) so that the owner's heartbeats, which rewrite the job's key,
    never overwrite it."""

    v: int = SCHEMA_VERSION
    job_id: str
    requested_at_ms: int
    # Who asked: an instance (host/pid) or "cli".
    by: str = ""


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(DeliveryEnvelope)
_dead_letter_decoder = msgspec.json.Decoder(DeadLetter)
_dead_letter_head_decoder = msgspec.json.Decoder(DeadLetterHead)
_endpoint_decoder = msgspec.json.Decoder(Endpoint)
_attempt_decoder = msgspec.json.Decoder(AttemptRecord)
_replay_decoder = msgspec.json.Decoder(ReplayJob)
_replay_cancel_decoder = msgspec.json.Decoder(ReplayCancel)


def encode(message: msgspec.Struct | dict[str, Any]) -> bytes:
    return _encoder.encode(message)


def decode_envelope(raw: bytes) -> DeliveryEnvelope:
    return _envelope_decoder.decode(raw)


def decode_dead_letter(raw: bytes) -> DeadLetter:
    return _dead_letter_decoder.decode(raw)


def decode_dead_letter_head(raw: bytes) -> DeadLetterHead:
    return _dead_letter_head_decoder.decode(raw)


def decode_endpoint(raw: bytes) -> Endpoint:
    return _endpoint_decoder.decode(raw)


def encode_endpoint(endpoint: Endpoint) -> bytes:
    """The endpoint as its record stores it: without ``version``, which is the record's offset."""
    fields: dict[str, Any] = msgspec.to_builtins(endpoint)
    del fields["version"]
    return _encoder.encode(fields)


def decode_attempt(raw: bytes) -> AttemptRecord:
    return _attempt_decoder.decode(raw)


def decode_replay(raw: bytes) -> ReplayJob:
    return _replay_decoder.decode(raw)


def decode_replay_cancel(raw: bytes) -> ReplayCancel:
    return _replay_cancel_decoder.decode(raw)


def webhook_body(event: dict[str, Any]) -> bytes:
    """The Standard Webhooks body: ``{"type", "timestamp", "data"}``."""
    return _encoder.encode(
        {"type": event.get("type"), "timestamp": event.get("occurred_at"), "data": event}
    )
