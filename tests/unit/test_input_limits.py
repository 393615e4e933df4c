"""How deep and how big a click may be (shared.messages.MAX_JSON_DEPTH / MAX_CLICK_BYTES).

A click that decodes must also encode in every message that wraps it, or the dispatcher retries
it forever; a click bigger than ingest would take is set aside, not delivered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.model.errors import InvalidInput
from shared.model.messages import (
    MAX_CLICK_BYTES,
    MAX_JSON_DEPTH,
    DeadLetter,
    DeliveryEnvelope,
    decode_click,
    decode_json,
    decode_json_items,
    encode,
    nested_deeper_than,
    webhook_body,
)

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def nested(levels: int) -> bytes:
    """``levels`` objects, one inside the other."""
    return b'{"a":' * levels + b"1" + b"}" * levels


def click(**extra: Any) -> dict[str, Any]:
    return {
        "id": "evt_1",
        "type": "link.clicked",
        "account_id": "acc_1",
        "occurred_at": "2026-11-27T11:59:00Z",
        "link": {"id": "lnk_1"},
        **extra,
    }


def click_nested(levels: int) -> bytes:
    """A valid click whose object, with its unknown field, nests ``levels`` deep."""
    return encode(click())[:-1] + b',"deep":' + nested(levels - 1) + b"}"


def test_decode_json_accepts_nesting_at_the_limit() -> None:
    assert decode_json(nested(MAX_JSON_DEPTH)) is not None


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 500, 990, 100_000])
def test_decode_json_refuses_nesting_beyond_the_limit(levels: int) -> None:
    with pytest.raises(InvalidInput, match="malformed JSON") as caught:
        decode_json(nested(levels))

    assert caught.value.problems[0].problem == f"nested more than {MAX_JSON_DEPTH} levels deep"


def test_a_batch_may_nest_its_items_one_level_less_than_the_limit() -> None:
    at_limit = b"[" + nested(MAX_JSON_DEPTH - 1) + b"]"
    beyond = b"[" + nested(MAX_JSON_DEPTH) + b"]"

    assert decode_json_items(at_limit) == decode_json(at_limit)
    with pytest.raises(InvalidInput) as caught:
        decode_json_items(beyond)
    assert caught.value.problems[0].problem == f"nested more than {MAX_JSON_DEPTH} levels deep"


@pytest.mark.parametrize(
    "raw", [b"[1,2", b'[{"a":1},]', b'[{"a":1}] x', b'[{"a":"\xff"}]', b"[NaN]", b""]
)
def test_decode_json_items_refuses_as_decoding_the_whole_does(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as whole:
        decode_json(raw)
    with pytest.raises(InvalidInput) as items:
        decode_json_items(raw)

    assert items.value.problems == whole.value.problems


def test_decode_json_counts_arrays_as_levels() -> None:
    with pytest.raises(InvalidInput):
        decode_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_TEXT = st.text(alphabet='[]{}"\\\\ab', max_size=8)
_JSON_VALUES = st.recursive(
    st.none() | st.integers() | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=40,
)


@given(value=_JSON_VALUES, limit=st.integers(1, 8))
def test_depth_check_agrees_with_a_recursive_count(value: Any, limit: int) -> None:
    assert nested_deeper_than(value, limit) == (_depth(value) > limit)


@given(_JSON_VALUES)
def test_decode_json_items_gives_what_decoding_the_whole_gives(value: Any) -> None:
    raw = msgspec.json.encode(value)

    assert decode_json_items(raw) == (value if isinstance(value, list) else [value])


def test_decode_json_accepts_many_shallow_siblings() -> None:
    wide = msgspec.json.encode([{"a": [1, 2]} for _ in range(10_000)])
    assert len(decode_json(wide)) == 10_000


def test_click_nested_at_the_limit_decodes() -> None:
    assert decode_click(click_nested(MAX_JSON_DEPTH), now=NOW).id == "evt_1"


def test_click_nested_at_the_limit_encodes_in_every_wrapping_message() -> None:
    event = decode_click(click_nested(MAX_JSON_DEPTH), now=NOW).payload
    envelope = DeliveryEnvelope(
        webhook_id="msg_1",
        event_id="evt_1",
        endpoint_id="ep_1",
        account_id="acc_1",
        event=event,
        attempts_made=1,
        tier=0,
        due_at_ms=0,
    )

    webhook_body(event)
    encode(envelope)
    encode(DeadLetter(reason="exhausted", dead_at_ms=0, envelope=envelope))


def test_click_nested_one_level_beyond_the_limit_is_refused() -> None:
    with pytest.raises(InvalidInput, match="malformed JSON"):
        decode_click(click_nested(MAX_JSON_DEPTH + 1), now=NOW)


def test_click_of_the_maximum_size_decodes() -> None:
    raw = encode(click(padding=""))
    raw = encode(click(padding="x" * (MAX_CLICK_BYTES - len(raw))))

    assert len(raw) == MAX_CLICK_BYTES
    assert decode_click(raw, now=NOW).id == "evt_1"


def test_click_over_the_maximum_size_is_refused_as_too_large() -> None:
    raw = encode(click(padding="x" * MAX_CLICK_BYTES))

    with pytest.raises(InvalidInput, match="click too large") as caught:
        decode_click(raw, now=NOW)

    assert caught.value.problems[0].problem == f"is {len(raw)} bytes, more than {MAX_CLICK_BYTES}"
