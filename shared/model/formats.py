"""Payload formats: one click rendered for each kind of receiver. Pure; no I/O.

``standard`` is the Standard Webhooks body. ``slack``, ``discord`` and ``teams`` are chat
messages for the services' incoming webhooks; ``ifttt`` is IFTTT Webhooks' three values. Every
format is signed with the Standard Webhooks headers (plus the endpoint's extra signature
styles), so a receiver can always check that a message came from clickhook.

Everything shown in a chat message comes from the shortener's event, that is from whoever
created the link: it is escaped for the target's markup (so a link key cannot mention
``@channel`` or forge a link) and cut to the target's size limits before it is sent. The click
object is free-form JSON, so every field is read leniently: a missing or mistyped field is left
out, never an error.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from yarl import URL

from shared.model.endpoint_extras import sendable
from shared.model.messages import Endpoint, PayloadFormat, encode, webhook_body
from shared.model.signing import secret_key, signed_headers, style_headers
from shared.model.templates import render_template

# Slack's documented limits (https://docs.slack.dev/reference/block-kit/blocks). The budgets
# below keep every text inside them; tests/support/slack.py checks that independently.
SLACK_TEXT_MAX = 40_000
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_TEXT_MAX = 3000
SLACK_FIELD_TEXT_MAX = 2000
SLACK_MAX_FIELDS = 10
# Discord's embed limits (https://discord.com/developers/docs/resources/message#embed-object).
DISCORD_CONTENT_MAX = 2000
DISCORD_TITLE_MAX = 256
DISCORD_DESCRIPTION_MAX = 4096
DISCORD_FIELD_VALUE_MAX = 1024
DISCORD_FOOTER_MAX = 2048

# Our own budgets, far inside those limits: a message is read on a phone, and the sum of the
# budgets of one text stays below the limit of the text that holds them.
LABEL_MAX = 200  # the short link as shown, e.g. 短.be/abc
DESTINATION_MAX = 300  # the destination URL as shown
VALUE_MAX = 300  # country, referrer, device, tags, event id
NOTIFICATION_MAX = 500  # Slack's ``text``, what a phone notification shows
HREF_MAX = 1000  # a longer URL is shown as text, not linked

# Slack's control characters (https://docs.slack.dev/messaging/formatting-message-text):
# escaped, a click cannot write ``<!channel>`` or ``<https://evil|trusted>``.
SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Markdown backslash escapes for what Discord would act on: emphasis, code, spoilers, quotes,
# headings, masked links (``[text](url)``) and ``<@id>`` pings.
DISCORD_ESCAPES = {c: "\\" + c for c in "\\*_~`|<>[]()#"}
# Adaptive Card markdown has no HTML, quotes or headings: emphasis and links are what matter.
TEAMS_ESCAPES = {c: "\\" + c for c in "\\*_~`[]()"}
NO_ESCAPES: dict[str, str] = {}

# Characters that reorder text on screen (a link label could then show another domain).
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$", re.IGNORECASE)
# Left raw by URL quoting, yet they end a link in Slack (``|``) or in markdown (``)``, ``]``).
_HREF_ESCAPES = str.maketrans({"|": "%7C", "(": "%28", ")": "%29", "[": "%5B", "]": "%5D"})
_DEVICES = (
    (("bot", "crawler", "spider"), "Bot"),
    (("ipad",), "iPad"),
    (("iphone",), "iPhone"),
    (("android",), "Android"),
    (("windows",), "Windows"),
    (("macintosh", "mac os x"), "Mac"),
    (("cros",), "ChromeOS"),
    (("linux",), "Linux"),
)


# --- what a click shows ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClickView:
    """The fields a chat message shows; any of them may be missing."""

    short_link: str  # as people read it: 短.be/abc (the link id when there is no domain)
    short_url: str | None  # the same as a URL safe to link to: IDNA host, percent-encoded
    destination: str | None
    destination_url: str | None
    country: str | None
    referrer: str | None
    device: str | None
    tags: tuple[str, ...]
    occurred_at: datetime | None
    event_id: str | None


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def href(text: str | None) -> str | None:
    """``text`` as an http(s) URL that is safe inside a Slack or markdown link, or None.

    The host is IDNA-encoded and the rest percent-encoded; a URL with credentials, an odd host
    or more than ``HREF_MAX`` characters is not linked at all.
    """
    if text is None:
        return None
    try:
        url = URL(text)
    except (ValueError, TypeError):
        return None
    host = url.raw_host
    if url.scheme not in ("http", "https") or not host or url.raw_user is not None:
        return None
    if not _HOSTNAME.match(host) and not _is_ipv6(host):
        return None
    encoded = str(url)
    prefix = f"{url.scheme}://{url.raw_authority}"
    if not encoded.startswith(prefix):
        return None
    linked = prefix + encoded[len(prefix) :].translate(_HREF_ESCAPES)
    return linked if linked.isascii() and len(linked) <= HREF_MAX else None


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def device_from(user_agent: str | None) -> str | None:
    """A coarse device name from a User-Agent; None when it names none we know."""
    if user_agent is None:
        return None
    lowered = user_agent.lower()
    for needles, name in _DEVICES:
        if any(needle in lowered for needle in needles):
            return name
    return None


def _occurred_at(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def click_view(event: Mapping[str, Any]) -> ClickView:
    link = _obj(event.get("link"))
    click = _obj(event.get("click"))
    domain, key = _str(link.get("domain")), _str(link.get("key"))
    short_link = "/".join(part for part in (domain, key) if part) or str(link.get("id", "?"))
    destination = _str(link.get("url"))
    tags = link.get("tags")
    return ClickView(
        short_link=short_link,
        short_url=href(f"https://{domain}/{key or ''}") if domain else None,
        destination=destination,
        destination_url=href(destination),
        country=_str(click.get("country")),
        referrer=_str(click.get("referer")) or _str(click.get("referrer")),
        device=_str(click.get("device")) or device_from(_str(click.get("user_agent"))),
        tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
        occurred_at=_occurred_at(event.get("occurred_at")),
        event_id=_str(event.get("id")),
    )


# --- text that fits ---------------------------------------------------------------------------


def _units(char: str) -> int:
    """UTF-16 code units: what JavaScript-based services count as characters."""
    return 2 if ord(char) > 0xFFFF else 1


def text_units(text: str) -> int:
    return sum(_units(char) for char in text)


def _visible(char: str) -> str:
    if char in _BIDI_CONTROLS:
        return ""
    if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
        return " "  # a newline in a link key must not break the message's layout
    return char


def fit(raw: str, limit: int, escapes: Mapping[str, str]) -> str:
    """``raw`` escaped for its target and cut to at most ``limit`` units, ``…`` marking a cut.

    Each character is escaped on its own and the cut falls between them, so an entity such as
    ``&amp;`` or an escape such as ``\\*`` is never split. Stops reading once past the limit.
    """
    pieces: list[str] = []
    used = 0
    room_for_ellipsis = 0  # how many pieces fit in ``limit - 1`` units, the ellipsis' room
    for char in raw:
        piece = escapes.get(char) or _visible(char)
        used += text_units(piece)
        if used > limit:
            return "".join(pieces[:room_for_ellipsis]) + "…"
        if used <= limit - 1:
            room_for_ellipsis = len(pieces) + 1
        pieces.append(piece)
    return "".join(pieces)


def flag(country: str) -> str:
    """``🇯🇵 JP`` for an ISO 3166 code; other values as they are."""
    code = country.strip().upper()
    if len(code) == 2 and code.isascii() and code.isalpha():
        return "".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in code) + " " + code
    return country


def _utc_text(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(view: ClickView) -> list[tuple[str, str]]:
    """(name, raw value) of the facts a message lists, in order; absent ones left out."""
    facts = [
        ("Country", flag(view.country) if view.country else None),
        ("Referrer", view.referrer),
        ("Device", view.device),
        ("Tags", ", ".join(view.tags) or None),
    ]
    return [(name, value) for name, value in facts if value is not None]


# --- slack -------------------------------------------------------------------------------------


def _slack_link(label: str, limit: int, url: str | None) -> str:
    shown = fit(label, limit, SLACK_ESCAPES)
    # Slack wants & escaped inside URLs too; escaping lengthens, so the limit is checked again.
    # A | would end the label early (it has no escape): such a label is shown unlinked.
    escaped = "".join(SLACK_ESCAPES.get(char, char) for char in url or "")
    if url is None or len(escaped) > HREF_MAX or "|" in shown:
        return shown
    return f"<{escaped}|{shown}>"


def _slack_time(when: datetime) -> str:
    """Slack shows this in the reader's own time zone; the fallback is UTC."""
    shown_as = "{date_short_pretty} {time_secs}"
    return f"<!date^{int(when.timestamp())}^{shown_as}|{_utc_text(when)}>"


def slack_message(event: Mapping[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` for notifications, ``blocks`` for the channel."""
    view = click_view(event)
    headline = f"*Click on {_slack_link(view.short_link, LABEL_MAX, view.short_url)}*"
    if view.destination is not None:
        target = _slack_link(view.destination, DESTINATION_MAX, view.destination_url)
        headline += f"\n→ {target}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}}
    ]
    fields = [
        {"type": "mrkdwn", "text": f"*{name}*\n{fit(value, VALUE_MAX, SLACK_ESCAPES)}"}
        for name, value in _facts(view)
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:SLACK_MAX_FIELDS]})
    context = [_slack_time(view.occurred_at)] if view.occurred_at else []
    if view.event_id:
        context.append(fit(view.event_id, VALUE_MAX, SLACK_ESCAPES))
    if context:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
        )
    return {"text": fit(_notification(view), NOTIFICATION_MAX, SLACK_ESCAPES), "blocks": blocks}


def _notification(view: ClickView) -> str:
    text = f"Click on {view.short_link}"
    if view.destination is not None:
        text += f" → {view.destination}"
    return text + (f" ({view.country})" if view.country else "")


# --- discord -----------------------------------------------------------------------------------


def discord_message(event: Mapping[str, Any]) -> dict[str, Any]:
    """An execute-webhook message: a one-line ``content`` and one embed. ``allowed_mentions``
    is empty, so nothing in a click can ping anyone."""
    view = click_view(event)
    title = fit(f"Click on {view.short_link}", DISCORD_TITLE_MAX, DISCORD_ESCAPES)
    embed: dict[str, Any] = {"title": title}
    if view.short_url is not None:
        embed["url"] = view.short_url
    if view.destination is not None:
        embed["description"] = "→ " + _destination_markdown(view, DISCORD_ESCAPES)
    fields = [
        {"name": name, "value": fit(value, VALUE_MAX, DISCORD_ESCAPES), "inline": True}
        for name, value in _facts(view)
    ]
    if fields:
        embed["fields"] = fields
    if view.occurred_at is not None:
        embed["timestamp"] = view.occurred_at.isoformat()
    if view.event_id is not None:
        embed["footer"] = {"text": fit(view.event_id, VALUE_MAX, NO_ESCAPES)}
    return {
        "content": fit(_notification(view), NOTIFICATION_MAX, DISCORD_ESCAPES),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }


def _destination_markdown(view: ClickView, escapes: Mapping[str, str]) -> str:
    assert view.destination is not None
    shown = fit(view.destination, DESTINATION_MAX, escapes)
    return f"[{shown}]({view.destination_url})" if view.destination_url else shown


# --- teams -------------------------------------------------------------------------------------


def teams_message(event: Mapping[str, Any]) -> dict[str, Any]:
    """An Adaptive Card in a message, as Teams Workflows' "webhook request" trigger takes
    (Office 365 connectors and their MessageCard are retired)."""
    view = click_view(event)
    title = fit(f"Click on {view.short_link}", LABEL_MAX + 20, TEAMS_ESCAPES)
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True}
    ]
    if view.destination is not None:
        text = "→ " + _destination_markdown(view, TEAMS_ESCAPES)
        body.append({"type": "TextBlock", "text": text, "wrap": True})
    facts = [
        {"title": name, "value": fit(value, VALUE_MAX, TEAMS_ESCAPES)}
        for name, value in _facts(view)
    ]
    if view.occurred_at is not None:
        facts.append({"title": "Time", "value": _utc_text(view.occurred_at)})
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if view.short_url is not None:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open link", "url": view.short_url}]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


# --- ifttt -------------------------------------------------------------------------------------


def ifttt_values(event: Mapping[str, Any]) -> dict[str, str]:
    """IFTTT Webhooks' three ingredients: short link, destination, country (empty if absent).
    Values go through unchanged: IFTTT passes them on as data, not markup."""
    view = click_view(event)
    return {
        "value1": view.short_link,
        "value2": view.destination or "",
        "value3": view.country or "",
    }


# --- a sample click ----------------------------------------------------------------------------

# The link of every sample click: test events, template checks and previews.
TEST_LINK_ID = "lnk_clickhook_test"


def sample_click(endpoint: Endpoint, event_id: str, now: datetime) -> dict[str, Any]:
    """A ``link.clicked`` that says it is a test (``"test": true``) and points nowhere real."""
    return {
        "id": event_id,
        "type": "link.clicked",
        "occurred_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "account_id": endpoint.account_id,
        "test": True,
        "link": {
            "id": TEST_LINK_ID,
            "domain": "example.com",
            "key": "clickhook-test",
            "url": "https://example.com/clickhook-test",
            "tags": ["test"],
        },
        "click": {
            "ip": "192.0.2.1",
            "country": "US",
            "user_agent": "clickhook test event",
            "referer": None,
        },
    }


# --- one entry point ---------------------------------------------------------------------------

_RENDERERS: dict[PayloadFormat, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "slack": slack_message,
    "discord": discord_message,
    "teams": teams_message,
    "ifttt": ifttt_values,
}


def render_body(
    payload_format: PayloadFormat, event: dict[str, Any], template: str | None = None
) -> bytes:
    """The request body of one click for an endpoint of ``payload_format``; for "template",
    ``template`` rendered (``TemplateError`` when the click makes it fail)."""
    if payload_format == "standard":
        return webhook_body(event)
    if payload_format == "template":
        return render_template(template or "", event)
    return encode(_RENDERERS[payload_format](event))


def build_request(
    endpoint: Endpoint,
    event: dict[str, Any],
    *,
    webhook_id: str,
    timestamp_s: int,
    now: datetime,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one delivery: rendered in the endpoint's format, signed with every
    still-valid secret (Standard Webhooks) and with the current one in the extra styles, with
    the endpoint's custom headers first (none of which may be a header set here). A template
    that fails on this click raises ``TemplateError``: nothing is sent."""
    body = render_body(endpoint.format, event, endpoint.template)
    secrets = endpoint.signing_secrets(now)
    headers = sendable(endpoint.headers) if endpoint.headers else {}
    headers.update(signed_headers([secret_key(s) for s in secrets], webhook_id, timestamp_s, body))
    if secrets and endpoint.signature_styles:
        headers.update(style_headers(endpoint.signature_styles, secrets[0], body))
    return body, headers
