"""Payload formats: golden files for each renderer, Slack's limits and escaping, signatures.

Regenerate the golden files after an intended change with
``CLICKHOOK_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_formats.py`` and review the diff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from shared.model.formats import (
    DISCORD_CONTENT_MAX,
    DISCORD_DESCRIPTION_MAX,
    DISCORD_FIELD_VALUE_MAX,
    DISCORD_TITLE_MAX,
    NO_ESCAPES,
    SLACK_ESCAPES,
    build_request,
    device_from,
    discord_message,
    fit,
    href,
    ifttt_values,
    render_body,
    slack_message,
    teams_message,
    text_units,
)
from shared.model.messages import Endpoint, EndpointSecret, PayloadFormat, webhook_body
from shared.model.routing import DeadLettered, RetryLater, classify_status, route_after_attempt
from shared.model.signing import generate_secret
from tests.support.slack import message_problems

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CLICKHOOK_UPDATE_GOLDEN") == "1"
# The fixed renderers; "template" is the endpoint's own (tests/unit/test_templates.py).
FORMATS: tuple[PayloadFormat, ...] = tuple(f for f in get_args(PayloadFormat) if f != "template")

# One click with everything that is hard to show: an IDN domain, accents and emoji, markup in
# the key, the destination and the tags, ampersands everywhere.
EVENT: dict[str, Any] = {
    "id": "evt_golden_1",
    "type": "link.clicked",
    "occurred_at": "2026-11-27T11:00:00.123Z",
    "account_id": "acc_42",
    "link": {
        "id": "lnk_9",
        "domain": "短.be",
        "key": "spring&<sale>",
        "url": "https://example.com/été?a=1&b=<script>alert(1)</script>",
        "tags": ["spring", "<script>", "R&D"],
    },
    "click": {
        "ip": "203.0.113.9",
        "country": "JP",
        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
        "referer": "https://news.example/?q=café&x=<b>*bold*</b>",
    },
    "campaign": {"name": "Frühling 🌸 <b>sale</b> & more"},
}


def endpoint(payload_format: PayloadFormat = "standard", **fields: Any) -> Endpoint:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    return Endpoint(
        id="ep_1",
        account_id="acc_42",
        url="https://hooks.example.com/x",
        secrets=fields.pop("secrets", [EndpointSecret(generate_secret())]),
        format=payload_format,
        created_at=now,
        updated_at=now,
        **fields,
    )


# --- golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize("payload_format", FORMATS)
def test_rendered_body_matches_its_golden_file(payload_format: PayloadFormat) -> None:
    rendered = orjson.loads(render_body(payload_format, EVENT))
    path = GOLDEN / f"{payload_format}.json"
    if UPDATE:
        path.write_text(json.dumps(rendered, ensure_ascii=False, indent=2) + "\n")

    assert rendered == json.loads(path.read_text()), f"differs from {path.name}"


def test_every_format_has_a_golden_file_and_no_other_file_is_there() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} == set(FORMATS)


def test_standard_body_is_the_standard_webhooks_body() -> None:
    assert render_body("standard", EVENT) == webhook_body(EVENT)


def test_golden_slack_message_is_one_slack_accepts() -> None:
    assert message_problems(json.loads((GOLDEN / "slack.json").read_text())) == []


# --- slack ---------------------------------------------------------------------------------------


def slack_texts(message: dict[str, Any]) -> list[str]:
    texts = [message["text"]]
    for block in message["blocks"]:
        texts += [block["text"]["text"]] if "text" in block else []
        texts += [item["text"] for item in block.get("fields", []) + block.get("elements", [])]
    return texts


def test_slack_message_shows_link_destination_country_referrer_device_and_time() -> None:
    text = "\n".join(slack_texts(slack_message(EVENT)))

    assert "短.be/spring&amp;&lt;sale&gt;" in text
    assert "<https://xn--s7y.be/spring&amp;%3Csale%3E|" in text
    assert "https://example.com/été?a=1&amp;b=&lt;script&gt;" in text
    assert "🇯🇵 JP" in text
    assert "https://news.example/?q=café&amp;x=&lt;b&gt;" in text
    assert "iPhone" in text
    assert "<!date^1795777200^" in text
    assert "2026-11-27 11:00:00 UTC" in text


@pytest.mark.parametrize(
    "hostile",
    ["<!channel>", "<!here|here>", "<@U024BE7LH>", "<https://evil.example|bank.example>", "&lt;"],
)
def test_slack_message_escapes_markup_so_a_click_cannot_mention_or_forge_links(
    hostile: str,
) -> None:
    event = {
        **EVENT,
        "link": {**EVENT["link"], "key": hostile, "url": hostile, "tags": [hostile]},
        "click": {"referer": hostile, "country": hostile, "user_agent": hostile},
    }
    message = slack_message(event)

    assert message_problems(message) == []
    assert all(hostile not in text for text in slack_texts(message))


def test_slack_message_with_huge_fields_is_cut_to_slacks_limits() -> None:
    huge = "&" * 8192  # each & becomes &amp;, five times as long
    event = {
        **EVENT,
        "link": {**EVENT["link"], "domain": huge, "key": huge, "url": "https://x.example/" + huge},
        "click": {"referer": huge, "country": huge, "user_agent": huge},
    }
    message = slack_message(event)

    assert message_problems(message) == []
    assert message["text"].endswith("…")


def test_slack_message_of_a_click_with_only_its_required_fields() -> None:
    event = {
        "id": "evt_1",
        "type": "link.clicked",
        "occurred_at": "2026-11-27T11:00:00Z",
        "account_id": "acc_42",
        "link": {"id": "lnk_9"},
        "click": "not an object",
    }
    message = slack_message(event)

    assert message_problems(message) == []
    assert message["text"] == "Click on lnk_9"


text_or_markup = st.text(
    st.characters(codec="utf-8") | st.sampled_from("&<>|*_`~[]()#\\\n\u202e🌸")
)


@settings(max_examples=100, deadline=None)
@given(
    domain=text_or_markup,
    key=text_or_markup,
    url=text_or_markup | text_or_markup.map(lambda t: "https://example.com/" + t),
    referer=text_or_markup,
    country=text_or_markup,
    tags=st.lists(text_or_markup, max_size=5),
    size=st.sampled_from([1, 50, 3000, 8192]),
)
def test_any_click_renders_to_messages_within_every_services_limits(
    domain: str, key: str, url: str, referer: str, country: str, tags: list[str], size: int
) -> None:
    def grow(text: str) -> str:
        return (text * (size // max(len(text), 1) + 1))[:size] if text else text

    event = {
        **EVENT,
        "link": {"id": "lnk_1", "domain": grow(domain), "key": grow(key), "url": grow(url)},
        "click": {"referer": grow(referer), "country": grow(country)},
    }
    event["link"]["tags"] = [grow(t) for t in tags]

    assert message_problems(slack_message(event)) == []
    discord = discord_message(event)
    embed = discord["embeds"][0]
    assert text_units(discord["content"]) <= DISCORD_CONTENT_MAX
    assert text_units(embed["title"]) <= DISCORD_TITLE_MAX
    assert text_units(embed.get("description", "")) <= DISCORD_DESCRIPTION_MAX
    assert all(text_units(f["value"]) <= DISCORD_FIELD_VALUE_MAX for f in embed.get("fields", []))
    assert len(orjson.dumps(teams_message(event))) < 28_000  # Teams' message size limit


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({}, "no_text"),
        ({"text": "hi <!channel>"}, "control sequence"),
        ({"text": "a & b"}, "unescaped &"),
        ({"text": "a > b"}, "unescaped < or >"),
        ({"text": "x" * 40_001}, "more than 40000"),
        ({"blocks": [{"type": "divider"}] * 51}, "more than 50"),
        ({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]}, "3000"),
        ({"blocks": [{"type": "section"}]}, "text or fields"),
    ],
)
def test_the_fake_slack_refuses_what_slack_refuses(message: dict[str, Any], problem: str) -> None:
    """The oracle the Slack tests lean on is not vacuous."""
    assert any(problem in found for found in message_problems(message))


# --- pieces --------------------------------------------------------------------------------------


def test_fit_cuts_between_entities_never_inside_one() -> None:
    assert fit("&" * 10, 12, SLACK_ESCAPES) == "&amp;&amp;…"
    assert fit("a&b", 7, SLACK_ESCAPES) == "a&amp;b"


@given(raw=text_or_markup, limit=st.integers(min_value=1, max_value=60))
def test_fit_keeps_an_escaped_prefix_within_the_limit(raw: str, limit: int) -> None:
    whole = fit(raw, len(raw) * 5 + 1, SLACK_ESCAPES)
    cut = fit(raw, limit, SLACK_ESCAPES)

    assert text_units(cut) <= limit
    if text_units(whole) <= limit:
        assert cut == whole
    else:
        assert cut.endswith("…")
        assert whole.startswith(cut[:-1])


def test_fit_counts_characters_outside_the_bmp_as_two() -> None:
    assert fit("🌸" * 5, 4, NO_ESCAPES) == "🌸…"
    assert text_units(fit("🌸" * 5, 4, NO_ESCAPES)) <= 4


def test_fit_drops_bidi_overrides_and_flattens_newlines() -> None:
    assert fit("evil\u202eexe.moc\nnext", 100, NO_ESCAPES) == "evilexe.moc next"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://短.be/abc", "https://xn--s7y.be/abc"),
        ("https://example.com/a b|c(d)", "https://example.com/a%20b%7Cc%28d%29"),
        ("https://[2001:db8::1]/x", "https://[2001:db8::1]/x"),
        ("javascript:alert(1)", None),
        ("https://bank.example@evil.example/", None),
        ("https://exa mple.com/", None),
        ("https://example.com/" + "a" * 2000, None),
        ("not a url", None),
    ],
)
def test_href_links_only_plain_http_urls(url: str, expected: str | None) -> None:
    assert href(url) == expected


@pytest.mark.parametrize(
    ("user_agent", "device"),
    [
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)", "iPhone"),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8)", "Android"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Windows"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)", "Mac"),
        ("Googlebot/2.1 (+http://www.google.com/bot.html)", "Bot"),
        ("curl/8.5.0", None),
        (None, None),
    ],
)
def test_device_is_read_from_the_user_agent(user_agent: str | None, device: str | None) -> None:
    assert device_from(user_agent) == device


def test_ifttt_values_are_short_link_destination_and_country() -> None:
    assert ifttt_values(EVENT) == {
        "value1": "短.be/spring&<sale>",
        "value2": "https://example.com/été?a=1&b=<script>alert(1)</script>",
        "value3": "JP",
    }
    assert ifttt_values({"link": {"id": "lnk_9"}}) == {
        "value1": "lnk_9",
        "value2": "",
        "value3": "",
    }


def test_discord_message_can_ping_no_one() -> None:
    event = {**EVENT, "link": {**EVENT["link"], "key": "@everyone <@123>"}}
    message = discord_message(event)

    assert message["allowed_mentions"] == {"parse": []}
    assert "<@123>" not in message["content"]


# --- signed requests -----------------------------------------------------------------------------


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("payload_format", FORMATS)
def test_every_format_is_signed_with_standard_webhooks(payload_format: PayloadFormat) -> None:
    target = endpoint(payload_format)
    now_s = int(time.time())

    body, headers = build_request(
        target, EVENT, webhook_id="msg_1", timestamp_s=now_s, now=datetime.now(UTC)
    )

    verified = Webhook(target.secrets[0].secret).verify(body, headers)
    assert verified == orjson.loads(render_body(payload_format, EVENT))
    assert headers["content-type"] == "application/json"


def test_extra_signature_styles_sign_the_rendered_body_with_the_current_secret() -> None:
    current, rotated_out = generate_secret(), generate_secret()
    later = datetime.now(UTC) + timedelta(hours=1)
    target = endpoint(
        "slack",
        signature_styles=["github", "dub"],
        secrets=[EndpointSecret(current), EndpointSecret(rotated_out, later)],
    )

    body, headers = build_request(
        target, EVENT, webhook_id="msg_1", timestamp_s=int(time.time()), now=datetime.now(UTC)
    )

    assert headers["X-Hub-Signature-256"] == "sha256=" + hex_hmac(current, body)
    assert headers["Dub-Signature"] == hex_hmac(current, body)
    assert len(headers["webhook-signature"].split()) == 2
    Webhook(rotated_out).verify(body, headers)


def test_without_signature_styles_only_standard_webhooks_headers_are_sent() -> None:
    _, headers = build_request(
        endpoint(), EVENT, webhook_id="msg_1", timestamp_s=1, now=datetime.now(UTC)
    )

    assert set(headers) == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
    }


# --- slack's answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer", "route"),
    [
        (400, "invalid_payload", RetryLater(1)),
        (404, "no_service", RetryLater(1)),
        (410, "channel_is_archived", DeadLettered("endpoint_gone")),
    ],
)
def test_slack_errors_are_retried_or_disable_like_any_receivers(
    status: int, answer: str, route: object
) -> None:
    outcome = classify_status(status)

    assert classify_status(200) == "success"  # Slack's "ok"
    assert route_after_attempt(outcome, current_tier=0, schedule_s=(5.0, 60.0, 300.0)) == route, (
        answer
    )
