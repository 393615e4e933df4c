"""A loopback Slack incoming webhook: checks messages the way Slack does and answers like it.

The checks are written from Slack's documentation, not from shared/model/formats.py, so they are an
independent oracle: sizes within Slack's limits, and mrkdwn text whose only ``<…>`` sequences
are links and dates, and whose ``&`` only starts the three entities Slack knows.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web

from tests.support.loopback import LoopbackReceiver

TEXT_MAX = 40_000
MAX_BLOCKS = 50
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10

_CONTROL = re.compile(r"<[^<>]*>")
_LINK = re.compile(r"^<https?://[^\s|<>]+(\|[^<>|]*)?>$")
_DATE = re.compile(r"^<!date\^\d+\^[^|<>]+\|[^<>|]*>$")
_STRAY_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")

# Paths that play a channel in a state Slack answers for with an error.
ARCHIVED_PATH = "/services/T0/B0/archived"
NO_SERVICE_PATH = "/services/T0/B0/revoked"


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def mrkdwn_problems(text: str, limit: int, where: str) -> list[str]:
    problems = []
    if not text:
        problems.append(f"{where}: empty text")
    if units(text) > limit:
        problems.append(f"{where}: {units(text)} characters, more than {limit}")
    if _STRAY_AMPERSAND.search(text):
        problems.append(f"{where}: unescaped &")
    problems += [
        f"{where}: control sequence {sequence[:60]!r}"
        for sequence in _CONTROL.findall(text)
        if not (_LINK.match(sequence) or _DATE.match(sequence))
    ]
    if ">" in _CONTROL.sub("", text) or "<" in _CONTROL.sub("", text):
        problems.append(f"{where}: unescaped < or >")
    return problems


def _text_object(obj: Any, limit: int, where: str) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("mrkdwn", "plain_text"):
        return [f"{where}: not a text object"]
    text = obj.get("text")
    if not isinstance(text, str):
        return [f"{where}: text is not a string"]
    if obj["type"] == "plain_text":
        return [f"{where}: too long"] if units(text) > limit or not text else []
    return mrkdwn_problems(text, limit, where)


def _block_problems(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{where}: not an object"]
    kind = block.get("type")
    if kind == "section":
        problems = []
        if "text" not in block and "fields" not in block:
            problems.append(f"{where}: a section needs text or fields")
        if "text" in block:
            problems += _text_object(block["text"], SECTION_TEXT_MAX, f"{where}.text")
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
            problems.append(f"{where}.fields: more than {MAX_FIELDS} or not a list")
        else:
            for i, item in enumerate(fields):
                problems += _text_object(item, FIELD_TEXT_MAX, f"{where}.fields[{i}]")
        return problems
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
            return [f"{where}.elements: 1 to {MAX_CONTEXT_ELEMENTS} needed"]
        return [
            p
            for i, item in enumerate(elements)
            for p in _text_object(item, SECTION_TEXT_MAX, f"{where}.elements[{i}]")
        ]
    if kind == "divider":
        return []
    return [f"{where}: unknown block type {kind!r}"]


def message_problems(message: Any) -> list[str]:
    """Why Slack would refuse ``message``; empty when it would post it."""
    if not isinstance(message, dict):
        return ["not a JSON object"]
    text, blocks = message.get("text"), message.get("blocks")
    if not text and not blocks:
        return ["no_text"]
    problems: list[str] = []
    if text is not None:
        if not isinstance(text, str):
            problems.append("text: not a string")
        else:
            problems += mrkdwn_problems(text, TEXT_MAX, "text")
    if blocks is not None:
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            problems.append(f"blocks: more than {MAX_BLOCKS} or not a list")
        else:
            for i, block in enumerate(blocks):
                problems += _block_problems(block, f"blocks[{i}]")
    return problems


@dataclass(frozen=True)
class SlackPost:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    answer: str
    problems: list[str]
    at_s: float


@dataclass
class FakeSlack(LoopbackReceiver):
    default_path: ClassVar[str] = "/services/T0/B0/campaign"
    posts: list[SlackPost] = field(default_factory=list)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, answer, problems = self._answer(request.path, body)
        self.posts.append(
            SlackPost(
                request.path, dict(request.headers), body, status, answer, problems, time.time()
            )
        )
        await self._arrived_one()
        return web.Response(status=status, text=answer, content_type="text/html")

    @staticmethod
    def _answer(path: str, body: bytes) -> tuple[int, str, list[str]]:
        if path == ARCHIVED_PATH:
            return 410, "channel_is_archived", []
        if path == NO_SERVICE_PATH:
            return 404, "no_service", []
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, "invalid_payload", ["not JSON"]
        problems = message_problems(message)
        if problems == ["no_text"]:
            return 400, "no_text", problems
        if problems:
            return 400, "invalid_payload", problems
        return 200, "ok", []

    def on_path(self, path: str) -> list[SlackPost]:
        return [post for post in self.posts if post.path == path]

    async def wait_for(self, count: int, timeout_s: float, path: str | None = None) -> None:
        def done() -> bool:
            return len(self.on_path(path) if path else self.posts) >= count

        await self._until(done, timeout_s)
