"""Click validation and the one codec for every message on Kafka."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model.errors import InvalidInput, Problem
from shared.model.messages import (
    AttemptRecord,
    ClickFields,
    DeadLetter,
    DeadLetterReason,
    DeliveryEnvelope,
    Endpoint,
    EndpointFilters,
    EndpointSecret,
    body_sent_by,
    decode_attempt,
    decode_click,
    decode_dead_letter,
    decode_dead_letter_head,
    decode_endpoint,
    decode_envelope,
    decode_json,
    decode_stored_click,
    encode,
    validate_click,
    webhook_body,
)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
CREATED = datetime(2024, 12, 1, 8, 30, 0, tzinfo=UTC)
REASONS: tuple[DeadLetterReason, ...] = get_args(DeadLetterReason)


@pytest.fixture(name="click")
def fixture_click() -> dict[str, Any]:
    return {
        "id": "evt_1",
        "type": "link.clicked",
        "account_id": "acc_1",
        "occurred_at": "2025-01-01T11:59:00Z",
        "link": {
            "id": "lnk_1",
            "domain": "短.be",
            "key": "spring",
            "url": "https://example.com/landing",
            "tags": ["promo", "spring"],
            "folder": "campaigns",
        },
        "geo": {"country": "BE", "city": "Gent"},
        "device": "mobile",
    }


def _problems(obj: object, **kwargs: Any) -> list[Problem]:
    with pytest.raises(InvalidInput) as caught:
        validate_click(obj, now=NOW, **kwargs)
    return caught.value.problems


def _attempt(attempt: int = 1) -> AttemptRecord:
    return AttemptRecord(
        webhook_id="msg_abc",
        event_id="evt_1",
        endpoint_id="ep_1",
        account_id="acc_1",
        attempt=attempt,
        at_ms=1_735_732_800_000,
        duration_ms=12.5,
        outcome="http_5xx",
        status=503,
        error=None,
        response_body="try later",
    )


def _envelope(event: dict[str, Any]) -> DeliveryEnvelope:
    return DeliveryEnvelope(
        webhook_id="msg_abc",
        event_id="evt_1",
        endpoint_id="ep_1",
        account_id="acc_1",
        event=event,
        attempts_made=2,
        tier=1,
        due_at_ms=1_735_733_100_000,
        attempts=[_attempt(1), _attempt(2)],
    )


def _endpoint() -> Endpoint:
    return Endpoint(
        id="ep_1",
        account_id="acc_1",
        url="https://hooks.example.com/in",
        description="analytics",
        filters=EndpointFilters(event_types=["link.clicked"], tags=["promo"]),
        rate_limit_per_s=2.5,
        secrets=[
            EndpointSecret("whsec_new"),
            EndpointSecret("whsec_old", expires_at=NOW + timedelta(hours=1)),
            EndpointSecret("whsec_older", expires_at=NOW - timedelta(seconds=1)),
        ],
        created_at=CREATED,
        updated_at=NOW,
    )


# --- validate_click -------------------------------------------------------------------------


def test_validate_click_extracts_the_routing_fields(click: dict[str, Any]) -> None:
    event = validate_click(click, now=NOW)
    assert event.id == "evt_1"
    assert event.type == "link.clicked"
    assert event.account_id == "acc_1"
    assert event.occurred_at == datetime(2025, 1, 1, 11, 59, tzinfo=UTC)
    assert event.link_id == "lnk_1"
    assert event.tags == ("promo", "spring")


def test_validate_click_keeps_unknown_fields_in_the_payload(click: dict[str, Any]) -> None:
    original = copy.deepcopy(click)
    event = validate_click(click, now=NOW)
    assert event.payload == original
    assert event.payload["geo"] == {"country": "BE", "city": "Gent"}
    assert event.payload["link"]["folder"] == "campaigns"


def test_validate_click_preserves_an_idn_domain(click: dict[str, Any]) -> None:
    event = validate_click(click, now=NOW)
    assert event.domain == "短.be"
    assert event.payload["link"]["domain"] == "短.be"


def test_validate_click_accepts_a_minimal_event() -> None:
    minimal = {
        "id": "e",
        "type": "t",
        "account_id": "a",
        "occurred_at": "2024-06-01T00:00:00+02:00",
        "link": {"id": "l"},
    }
    event = validate_click(minimal, now=NOW)
    assert event.domain is None
    assert event.tags == ()
    assert event.occurred_at == datetime(2024, 5, 31, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (("type",), Problem("type", "is required")),
        (("account_id",), Problem("account_id", "is required")),
        (("occurred_at",), Problem("occurred_at", "is required")),
        (("link",), Problem("link", "is required")),
        (("link", "id"), Problem("link.id", "is required")),
    ],
)
def test_validate_click_names_a_missing_required_field(
    click: dict[str, Any], path: tuple[str, ...], problem: Problem
) -> None:
    parent = click
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    assert _problems(click) == [problem]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("type", 5, Problem("type", "Expected `str`, got `int`")),
        ("type", "", Problem("type", "Expected `str` of length >= 1")),
        ("account_id", "a" * 201, Problem("account_id", "Expected `str` of length <= 200")),
        ("link", None, Problem("link", "Expected `object`, got `null`")),
        ("occurred_at", "yesterday", Problem("occurred_at", "Invalid RFC3339 encoded datetime")),
        ("occurred_at", 1735732800, Problem("occurred_at", "Expected `datetime`, got `int`")),
    ],
)
def test_validate_click_reports_the_path_of_a_wrong_value(
    click: dict[str, Any], field: str, value: object, problem: Problem
) -> None:
    click[field] = value
    assert _problems(click) == [problem]


def test_validate_click_reports_the_index_of_a_bad_tag(click: dict[str, Any]) -> None:
    click["link"]["tags"] = ["promo", 7]
    assert _problems(click) == [Problem("link.tags[1]", "Expected `str`, got `int`")]


def test_validate_click_refuses_too_many_tags(click: dict[str, Any]) -> None:
    click["link"]["tags"] = [f"t{n}" for n in range(101)]
    assert _problems(click) == [Problem("link.tags", "Expected `array` of length <= 100")]


def test_validate_click_puts_the_batch_index_on_problems(click: dict[str, Any]) -> None:
    del click["account_id"]
    assert [p.index for p in _problems(click, index=3)] == [3]


def test_validate_click_refuses_a_time_without_offset(click: dict[str, Any]) -> None:
    click["occurred_at"] = "2025-01-01T11:59:00"
    assert _problems(click) == [Problem("occurred_at", "needs a UTC offset, e.g. Z")]


@pytest.mark.parametrize("occurred_at", ["2025-01-01T13:00:01Z", "2030-01-01T00:00:00Z"])
def test_validate_click_states_the_rule_for_a_future_time(
    click: dict[str, Any], occurred_at: str
) -> None:
    click["occurred_at"] = occurred_at
    rule = "must be at most 1 hour after now (2025-01-01T12:00:00Z)"
    assert _problems(click) == [Problem("occurred_at", rule)]


def test_validate_click_states_the_rule_for_a_time_before_2000(click: dict[str, Any]) -> None:
    click["occurred_at"] = "1999-12-31T23:59:59Z"
    assert _problems(click) == [Problem("occurred_at", "must be at or after 2000-01-01T00:00:00Z")]


def test_validate_click_of_an_empty_object_names_each_required_field() -> None:
    assert _problems({}, default_id="evt_new") == [
        Problem("type", "is required"),
        Problem("account_id", "is required"),
        Problem("occurred_at", "is required"),
        Problem("link", "is required"),
    ]


def test_validate_click_lists_each_problem_of_a_bad_link(click: dict[str, Any]) -> None:
    click["link"] = {"id": "", "domain": 5, "tags": ["ok", 7, "x" * 201]}
    assert _problems(click) == [
        Problem("link.id", "Expected `str` of length >= 1"),
        Problem("link.domain", "Expected `str | null`, got `int`"),
        Problem("link.tags[1]", "Expected `str`, got `int`"),
        Problem("link.tags[2]", "Expected `str` of length <= 200"),
    ]


def test_validate_click_lists_type_problems_and_rule_problems_together(
    click: dict[str, Any],
) -> None:
    click["type"] = 5
    click["occurred_at"] = "2030-01-01T00:00:00Z"
    del click["link"]["id"]
    assert [p.field for p in _problems(click, index=4)] == ["type", "link.id", "occurred_at"]
    assert {p.index for p in _problems(click, index=4)} == {4}


def test_validate_click_reports_a_wrongly_typed_id_once(click: dict[str, Any]) -> None:
    click["id"] = 7
    assert _problems(click) == [Problem("id", "Expected `str | null`, got `int`")]


def msgspec_first_path(obj: dict[str, Any]) -> str | None:
    """The field msgspec names when it refuses ``obj`` as ClickFields (it names only one)."""
    try:
        msgspec.convert(obj, ClickFields, strict=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = text.partition(" - at `$")[2].rstrip("`").lstrip(".")
        missing = text.partition("missing required field `")[2].partition("`")[0]
        return ".".join(part for part in (at, missing) if part)
    return None


@given(
    st.dictionaries(
        st.sampled_from(["type", "account_id", "occurred_at", "link", "id"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=3),
            st.just("2024-01-01T00:00:00Z"),
            st.fixed_dictionaries({}, optional={"id": st.one_of(st.integers(), st.text())}),
        ),
    )
)
@settings(max_examples=300)
def test_validate_click_names_the_field_msgspec_names_among_all_it_finds(
    obj: dict[str, Any],
) -> None:
    """msgspec (the oracle for each type) stops at one problem; that one is always among ours."""
    first = msgspec_first_path(obj)
    if first is None:
        return
    fields = {p.field for p in _problems(obj, default_id="evt_x")}
    assert first in fields, (first, fields)


@pytest.mark.parametrize("occurred_at", ["2025-01-01T13:00:00Z", "2000-01-01T00:00:00Z"])
def test_validate_click_accepts_times_at_the_limits(
    click: dict[str, Any], occurred_at: str
) -> None:
    click["occurred_at"] = occurred_at
    assert validate_click(click, now=NOW).occurred_at == datetime.fromisoformat(occurred_at)


def test_validate_click_requires_an_id_without_default(click: dict[str, Any]) -> None:
    del click["id"]
    assert _problems(click) == [Problem("id", "is required")]


def test_validate_click_lists_every_own_problem(click: dict[str, Any]) -> None:
    del click["id"]
    click["occurred_at"] = "2025-01-01T11:59:00"
    assert _problems(click, index=0) == [
        Problem("occurred_at", "needs a UTC offset, e.g. Z", 0),
        Problem("id", "is required", 0),
    ]


@pytest.mark.parametrize("missing", [None, "absent"])
def test_validate_click_assigns_the_default_id(click: dict[str, Any], missing: str) -> None:
    if missing is None:
        click["id"] = None
    else:
        del click["id"]
    original = copy.deepcopy(click)
    event = validate_click(click, now=NOW, default_id="evt_new")
    assert event.id == "evt_new"
    assert event.payload == {**original, "id": "evt_new"}
    assert click == original


@dataclass(frozen=True)
class Stored:
    topic: str
    partition: int
    offset: int
    value: bytes | None


def test_a_stored_click_without_id_gets_one_from_its_position(click: dict[str, Any]) -> None:
    del click["id"]
    raw = msgspec.json.encode(click)
    first = decode_stored_click(Stored("p.clicks", 3, 1234, raw), now=NOW)
    again = decode_stored_click(Stored("p.clicks", 3, 1234, raw), now=NOW)
    assert first.id == again.id == "evt_p.clicks-3-1234"
    assert first.payload["id"] == first.id
    assert decode_stored_click(Stored("p.clicks", 3, 1235, raw), now=NOW).id != first.id


def test_a_stored_click_keeps_its_own_id(click: dict[str, Any]) -> None:
    stored = Stored("clicks", 0, 7, msgspec.json.encode(click))
    assert decode_stored_click(stored, now=NOW).id == click["id"]


def test_validate_click_keeps_its_own_id_over_the_default(click: dict[str, Any]) -> None:
    assert validate_click(click, now=NOW, default_id="evt_new").id == "evt_1"


@pytest.mark.parametrize(
    ("obj", "kind"), [([], "list"), ("click", "str"), (None, "NoneType"), (42, "int")]
)
def test_validate_click_refuses_a_non_object(obj: object, kind: str) -> None:
    assert _problems(obj, index=2) == [Problem("$", f"expected a JSON object, got {kind}", 2)]


# --- decode_json / decode_click -------------------------------------------------------------


def test_decode_click_decodes_and_validates(click: dict[str, Any]) -> None:
    event = decode_click(msgspec.json.encode(click), now=NOW)
    assert event.payload == click
    assert event.domain == "短.be"


def test_decode_click_refuses_a_null_record() -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_click(None, now=NOW)
    assert caught.value.problems == [Problem("$", "the record has no value")]


def test_decode_click_refuses_a_valid_json_non_object() -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_click(b"[1, 2]", now=NOW)
    assert caught.value.problems == [Problem("$", "expected a JSON object, got list")]


@pytest.mark.parametrize(
    "raw", [b"NaN", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1', b"", b"{'a': 1}"]
)
def test_decode_json_refuses_malformed_json(raw: bytes) -> None:
    with pytest.raises(InvalidInput, match="malformed JSON") as caught:
        decode_json(raw)
    assert [p.field for p in caught.value.problems] == ["$"]


@pytest.mark.parametrize("raw", [b'"\xff"', b'{"a": "caf\xc3"}', b'{"\xe9": 1}'])
def test_decode_json_refuses_invalid_utf8(raw: bytes) -> None:
    with pytest.raises(InvalidInput, match="malformed JSON"):
        decode_json(raw)


def test_decode_json_keeps_integers_beyond_64_bits() -> None:
    assert decode_json(b'{"n": 123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }


# --- codec round trips ----------------------------------------------------------------------


def test_endpoint_round_trips() -> None:
    endpoint = _endpoint()
    assert decode_endpoint(encode(endpoint)) == endpoint


def test_endpoint_encodes_times_as_utc_rfc3339() -> None:
    raw = msgspec.json.decode(encode(_endpoint()))
    assert raw["created_at"] == "2024-12-01T08:30:00Z"
    assert raw["v"] == 1


def test_attempt_record_round_trips() -> None:
    attempt = _attempt()
    assert decode_attempt(encode(attempt)) == attempt


def test_envelope_round_trips(click: dict[str, Any]) -> None:
    envelope = _envelope(click)
    assert decode_envelope(encode(envelope)) == envelope


def test_dead_letter_round_trips(click: dict[str, Any]) -> None:
    dead = DeadLetter(reason="exhausted", dead_at_ms=1_735_740_000_000, envelope=_envelope(click))
    assert decode_dead_letter(encode(dead)) == dead


def test_a_dead_letters_head_is_whose_it_is_and_when_it_died(click: dict[str, Any]) -> None:
    dead = DeadLetter(reason="exhausted", dead_at_ms=1_735_740_000_000, envelope=_envelope(click))
    head = decode_dead_letter_head(encode(dead))
    assert (head.endpoint_id, head.dead_at_ms) == (dead.envelope.endpoint_id, dead.dead_at_ms)


def test_a_record_without_a_dead_letters_head_is_refused(click: dict[str, Any]) -> None:
    raw = encode(DeadLetter(reason="exhausted", dead_at_ms=1, envelope=_envelope(click)))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.dead_at_ms"):
        decode_dead_letter_head(raw.replace(b'"dead_at_ms":1', b'"dead_at_ms":"1"'))
    with pytest.raises(msgspec.DecodeError):
        decode_dead_letter_head(b"not json")


def test_decoding_an_envelope_checks_field_types() -> None:
    raw = encode(_envelope({})).replace(b'"tier":1', b'"tier":"1"')
    with pytest.raises(msgspec.ValidationError, match=r"\$\.tier"):
        decode_envelope(raw)


def test_decoding_a_dead_letter_refuses_an_unknown_reason(click: dict[str, Any]) -> None:
    raw = encode(DeadLetter(reason="exhausted", dead_at_ms=1, envelope=_envelope(click)))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.reason"):
        decode_dead_letter(raw.replace(b'"exhausted"', b'"bored"'))


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_attempts = st.builds(
    AttemptRecord,
    webhook_id=st.text(),
    event_id=st.text(),
    endpoint_id=st.text(),
    account_id=st.text(),
    attempt=st.integers(min_value=1, max_value=100),
    at_ms=st.integers(min_value=0, max_value=2**53),
    duration_ms=st.floats(min_value=0, max_value=1e7),
    outcome=st.sampled_from(["success", "http_5xx", "timeout", "refused_destination"]),
    status=st.none() | st.integers(min_value=100, max_value=599),
    error=st.none() | st.text(max_size=50),
    response_body=st.none() | st.text(max_size=50),
)
_envelopes = st.builds(
    DeliveryEnvelope,
    webhook_id=st.text(min_size=1),
    event_id=st.text(min_size=1),
    endpoint_id=st.text(min_size=1),
    account_id=st.text(min_size=1),
    event=st.dictionaries(st.text(max_size=8), _json_values, max_size=6),
    attempts_made=st.integers(min_value=0, max_value=100),
    tier=st.integers(min_value=-1, max_value=20),
    due_at_ms=st.integers(min_value=0, max_value=2**53),
    attempts=st.lists(_attempts, max_size=3),
)


@settings(max_examples=100, deadline=None)
@given(envelope=_envelopes)
def test_any_envelope_round_trips(envelope: DeliveryEnvelope) -> None:
    assert decode_envelope(encode(envelope)) == envelope


@settings(max_examples=50, deadline=None)
@given(
    envelope=_envelopes,
    reason=st.sampled_from(REASONS),
)
def test_any_dead_letter_round_trips(envelope: DeliveryEnvelope, reason: DeadLetterReason) -> None:
    dead = DeadLetter(reason=reason, dead_at_ms=1, envelope=envelope)
    assert decode_dead_letter(encode(dead)) == dead


# --- endpoints ------------------------------------------------------------------------------


def test_signing_secrets_are_current_first_without_expired_ones() -> None:
    assert _endpoint().signing_secrets(NOW) == ["whsec_new", "whsec_old"]


def test_signing_secrets_drop_a_secret_at_its_expiry() -> None:
    assert _endpoint().signing_secrets(NOW + timedelta(hours=1)) == ["whsec_new"]


def test_public_view_hides_secrets_and_the_schema_version() -> None:
    view = _endpoint().public_view()
    assert "secrets" not in view
    assert "v" not in view
    assert "whsec" not in str(view)
    assert view["url"] == "https://hooks.example.com/in"
    assert view["filters"] == {"event_types": ["link.clicked"], "tags": ["promo"]}


def test_webhook_body_wraps_the_event_as_standard_webhooks_data(click: dict[str, Any]) -> None:
    body = msgspec.json.decode(webhook_body(click))
    assert body == {"type": "link.clicked", "timestamp": "2025-01-01T11:59:00Z", "data": click}


def test_endpoint_times_keep_their_instant_across_offsets() -> None:
    endpoint = msgspec.structs.replace(
        _endpoint(), updated_at=datetime(2025, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    )
    assert decode_endpoint(encode(endpoint)).updated_at == NOW


# --- what an attempt record carries (issue 26: bytes per click) -----------------------------


def _tried(number: int, version: int | None = 7, replay_id: str | None = None) -> AttemptRecord:
    return AttemptRecord(
        webhook_id="msg_1", event_id="evt_1", endpoint_id="ep_1", account_id="acc_1",
        attempt=number, at_ms=number, duration_ms=1.0, outcome="http_5xx",
        endpoint_version=version, replay_id=replay_id,
    )  # fmt: skip


def test_the_first_attempt_of_a_run_keeps_its_body() -> None:
    assert body_sent_by([], 7, None) is None


def test_a_later_attempt_points_at_the_run_s_first() -> None:
    assert body_sent_by([_tried(1), _tried(2)], 7, None) == 1


def test_a_new_endpoint_version_starts_a_run_with_its_own_body() -> None:
    assert body_sent_by([_tried(1, version=6)], 7, None) is None
    assert body_sent_by([_tried(1, version=6), _tried(2)], 7, None) == 2


def test_a_replay_starts_a_run_with_its_own_body() -> None:
    history = [_tried(1), _tried(2), _tried(3, replay_id="rpl_1")]
    assert body_sent_by(history[:2], 7, "rpl_1") is None
    assert body_sent_by(history, 7, "rpl_1") == 3


def test_history_written_before_endpoint_versions_never_stands_in_for_a_body() -> None:
    assert body_sent_by([_tried(1, version=None)], None, None) is None
    assert body_sent_by([_tried(1, version=None)], 7, None) is None


def test_an_attempt_record_from_before_request_body_of_still_decodes() -> None:
    """Old records keep being indexed and shown: the new field is optional."""
    old = {
        "v": 1, "webhook_id": "msg_1", "event_id": "evt_1", "endpoint_id": "ep_1",
        "account_id": "acc_1", "attempt": 1, "at_ms": 1, "duration_ms": 1.0,
        "outcome": "success", "request_body": "{}",
    }  # fmt: skip
    record = decode_attempt(msgspec.json.encode(old))
    assert record.request_body == "{}"
    assert record.request_body_of is None


def test_a_record_pointing_at_an_earlier_body_carries_no_copy_of_it() -> None:
    pointing = msgspec.structs.replace(_tried(2), request_body_of=1)
    encoded = encode(pointing)
    assert b"request_body" in encoded  # the pointer, named
    assert decode_attempt(encoded).request_body is None
    assert decode_attempt(encoded).request_body_of == 1
