"""An endpoint's custom request headers and free metadata: their limits and rules. Pure.

Custom headers go out on every webhook request to the endpoint (a receiver's own
``Authorization``, say). They can never replace what clickhook itself sends (the signature
headers, ``content-type``, ``user-agent``) nor what belongs to one connection (hop-by-hop
headers), and they are checked when written, so a delivery never meets a header it cannot send.
Their values are write-only: every answer and page shows them masked.

Each limit is written once, here: the msgspec types below carry it into the OpenAPI document,
and the rule functions name the header or key that breaks it (msgspec's own messages cannot).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from shared.model.errors import Problem
from shared.model.messages import MASK
from shared.model.signing import (
    HEADER_DUB_SIGNATURE,
    HEADER_GITHUB_SIGNATURE,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
)

MAX_HEADERS = 20
MAX_HEADER_NAME_CHARS = 64
MAX_HEADER_VALUE_BYTES = 1024
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_METADATA_BYTES = 8192  # keys and values together, as UTF-8

# RFC 9110 token characters.
HEADER_NAME_PATTERN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
# Visible ASCII with inner spaces and tabs: a valid field value that every HTTP stack sends
# and reads the same way (no line breaks, no control characters, no text outside ASCII whose
# bytes a receiver would have to guess), and no whitespace at either end, which HTTP drops.
HEADER_VALUE_PATTERN = r"^(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?$"
_NAME = re.compile(HEADER_NAME_PATTERN)
_VALUE = re.compile(HEADER_VALUE_PATTERN)

# What clickhook sets on every request. The svix-* names are not sent, but Svix's verifier
# prefers them to the webhook-* ones: a custom svix-signature would be what such a receiver checks.
SIGNATURE_HEADERS = frozenset(
    name.lower()
    for name in (
        HEADER_ID,
        HEADER_TIMESTAMP,
        HEADER_SIGNATURE,
        HEADER_GITHUB_SIGNATURE,
        HEADER_DUB_SIGNATURE,
        "svix-id",
        "svix-timestamp",
        "svix-signature",
    )
)
# Describe the body that is signed, or the sender (set by shared/delivery/http_client.py).
BODY_HEADERS = frozenset({"content-type", "content-encoding", "content-length", "user-agent"})
# Meaningful for one connection only (RFC 9110 section 7.6.1), or owned by the HTTP client.
HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)
HOP_BY_HOP_PREFIX = "proxy-"

HeaderName = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_HEADER_NAME_CHARS, pattern=HEADER_NAME_PATTERN),
]
HeaderValue = Annotated[
    str, msgspec.Meta(max_length=MAX_HEADER_VALUE_BYTES, pattern=HEADER_VALUE_PATTERN)
]
CustomHeaders = Annotated[
    dict[HeaderName, HeaderValue],
    msgspec.Meta(
        max_length=MAX_HEADERS,
        description="sent on every webhook request to the endpoint; write-only (answers show "
        f"each name with the value {MASK}); never a signature header, content-type, "
        "content-encoding, user-agent or a hop-by-hop header; names are case-insensitive",
    ),
]
MetadataKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_METADATA_KEY_CHARS)]
MetadataValue = Annotated[str, msgspec.Meta(max_length=MAX_METADATA_VALUE_CHARS)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    msgspec.Meta(
        max_length=MAX_METADATA_KEYS,
        description="free key/values for your own use, returned as given; "
        f"at most {MAX_METADATA_BYTES} bytes of keys and values together (UTF-8)",
    ),
]


def reserved_header_problem(name: str) -> str | None:
    """Why ``name`` cannot be a custom header, or None when it can."""
    lowered = name.lower()
    if lowered in SIGNATURE_HEADERS or lowered in BODY_HEADERS:
        return "is set by clickhook on every request: it cannot be replaced"
    if lowered in HOP_BY_HOP_HEADERS or lowered.startswith(HOP_BY_HOP_PREFIX):
        return "is a hop-by-hop header: it cannot be set"
    return None


def _header_name_problem(name: str) -> str | None:
    if len(name) > MAX_HEADER_NAME_CHARS:
        return f"the name is longer than {MAX_HEADER_NAME_CHARS} characters"
    if _NAME.match(name) is None:
        return "the name must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~"
    return reserved_header_problem(name)


def _header_value_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "the value must be a string"
    if len(value.encode()) > MAX_HEADER_VALUE_BYTES:
        return f"the value is longer than {MAX_HEADER_VALUE_BYTES} bytes"
    if _VALUE.match(value) is None:
        return (
            "the value must be visible ASCII with inner spaces or tabs: no line breaks, "
            "control characters, other text, or whitespace at either end"
        )
    return None


def _field(prefix: str, key: str) -> str:
    return f"{prefix}.{key[:MAX_HEADER_NAME_CHARS]}"


def header_problems(headers: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a ``headers`` object, each naming its header."""
    problems: list[Problem] = []
    if len(headers) > MAX_HEADERS:
        problems.append(Problem("headers", f"has {len(headers)} headers: at most {MAX_HEADERS}"))
    seen: set[str] = set()
    for name, value in headers.items():
        found = _header_name_problem(name)
        if found is None:
            found = _header_value_problem(value)
        if found is None and name.lower() in seen:
            found = "is given twice (header names are case-insensitive)"
        seen.add(name.lower())
        if found is not None:
            problems.append(Problem(_field("headers", name), found))
    return problems


def metadata_problems(metadata: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a ``metadata`` object, each naming its key."""
    problems: list[Problem] = []
    if len(metadata) > MAX_METADATA_KEYS:
        count = f"has {len(metadata)} keys: at most {MAX_METADATA_KEYS}"
        problems.append(Problem("metadata", count))
    total = 0
    for key, value in metadata.items():
        text = value if isinstance(value, str) else ""
        total += len(key.encode()) + len(text.encode())
        if not isinstance(value, str):
            problems.append(Problem(_field("metadata", key), "the value must be a string"))
        if not key:
            problems.append(Problem("metadata", "a key is empty"))
        elif len(key) > MAX_METADATA_KEY_CHARS:
            too_long = f"the key is longer than {MAX_METADATA_KEY_CHARS} characters"
            problems.append(Problem(_field("metadata", key), too_long))
        if len(text) > MAX_METADATA_VALUE_CHARS:
            too_long = f"the value is longer than {MAX_METADATA_VALUE_CHARS} characters"
            problems.append(Problem(_field("metadata", key), too_long))
    if total > MAX_METADATA_BYTES:
        size = f"holds {total} bytes of keys and values: at most {MAX_METADATA_BYTES}"
        problems.append(Problem("metadata", size))
    return problems


def extras_problems(body: Mapping[str, Any]) -> list[Problem]:
    """The problems of a request body's ``headers`` and ``metadata``, when they are objects
    (anything else is left to the type check)."""
    problems: list[Problem] = []
    headers, metadata = body.get("headers"), body.get("metadata")
    if isinstance(headers, dict):
        problems += header_problems(headers)
    if isinstance(metadata, dict):
        problems += metadata_problems(metadata)
    return problems


def sendable(headers: Mapping[str, str]) -> dict[str, str]:
    """The custom headers a request may carry. Validation refuses the reserved ones on write;
    this drops them again, so no record, however written, replaces a signature."""
    return {name: value for name, value in headers.items() if reserved_header_problem(name) is None}


def logged(request_headers: Mapping[str, str], custom: Mapping[str, str]) -> dict[str, str]:
    """A request's headers as the delivery log keeps them: custom values masked (they are
    write-only, and the log is shown to the account)."""
    return {name: MASK if name in custom else value for name, value in request_headers.items()}
