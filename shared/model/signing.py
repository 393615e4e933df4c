"""Standard Webhooks signing (https://www.standardwebhooks.com). Pure; no I/O."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Annotated, Literal

import msgspec

from shared.model.messages import SignatureStyle

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
HEADER_GITHUB_SIGNATURE = "X-Hub-Signature-256"
HEADER_DUB_SIGNATURE = "Dub-Signature"


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def is_valid_secret(secret: str) -> bool:
    """``whsec_`` and base64 of 24 to 64 bytes, as Standard Webhooks asks."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    try:
        key = secret_key(secret)
    except ValueError:
        return False
    return MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES


@functools.lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the base64-decoded bytes after the prefix.

    Cached: the same few secrets sign every delivery of a busy endpoint."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded, validate=True)


def sign(key: bytes, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature over ``{id}.{timestamp}.{body}``."""
    to_sign = b"%s.%d.%s" % (webhook_id.encode(), timestamp_s, body)
    digest = hmac.digest(key, to_sign, "sha256")  # one call into OpenSSL, no HMAC object
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Iterable[bytes], webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """Space-separated signatures, one per still-valid secret (rotation grace period)."""
    return " ".join(sign(key, webhook_id, timestamp_s, body) for key in keys)


def webhook_id(event_id: str, endpoint_id: str) -> str:
    """Stable for one (event, endpoint) pair across every retry and replay."""
    digest = hashlib.sha256(f"{event_id}\x00{endpoint_id}".encode()).digest()
    return "msg_" + base64.b32encode(digest[:15]).decode().lower()


def signed_headers(
    keys: Iterable[bytes], webhook_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    return {
        HEADER_ID: webhook_id,
        HEADER_TIMESTAMP: str(timestamp_s),
        HEADER_SIGNATURE: signature_header(keys, webhook_id, timestamp_s, body),
        "content-type": "application/json",
    }


def github_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256>`` of the body, as GitHub sends ``X-Hub-Signature-256``.

    The key is the whole secret string, ``whsec_`` prefix included, as UTF-8: a GitHub-style
    verifier is configured with the secret as text and uses exactly those bytes as the key.
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def dub_signature(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the body keyed with the whole secret string, as Dub's
    ``Dub-Signature``, so a receiver moving from Dub keeps its verifier."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def style_headers(styles: Iterable[SignatureStyle], secret: str, body: bytes) -> dict[str, str]:
    """The extra signature headers an endpoint asked for, signed with its current secret.

    These styles carry one signature each, so during a rotation grace period they use the new
    secret only (the Standard Webhooks header still carries both).
    """
    headers: dict[str, str] = {}
    for style in styles:
        if style == "github":
            headers[HEADER_GITHUB_SIGNATURE] = github_signature(secret, body)
        elif style == "dub":
            headers[HEADER_DUB_SIGNATURE] = dub_signature(secret, body)
    return headers


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    now_s: float,
    tolerance_s: float = 300.0,
) -> bool:
    """Receiver-side check: a fresh timestamp and at least one matching ``v1`` signature."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        msg_id = lowered[HEADER_ID]
        timestamp_s = int(lowered[HEADER_TIMESTAMP])
        presented = lowered[HEADER_SIGNATURE].split()
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = sign(secret_key(secret), msg_id, timestamp_s, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in presented)


class SignatureScheme(msgspec.Struct, frozen=True, kw_only=True):
    """One way clickhook signs a request, as GET /v1/meta tells receivers."""

    name: Literal["standard-webhooks-v1"] | SignatureStyle
    always: Annotated[
        bool, msgspec.Meta(description="false: sent when the endpoint's signature_styles has it")
    ]
    headers: list[str]
    algorithm: Literal["HMAC-SHA256"]
    signed_content: str
    encoding: str
    key: str


def _style_scheme(name: SignatureStyle, header: str, encoding: str) -> SignatureScheme:
    """A style of ``style_headers``: one HMAC of the body, keyed with the secret string."""
    return SignatureScheme(
        name=name,
        always=False,
        headers=[header],
        algorithm="HMAC-SHA256",
        signed_content="{body}",
        encoding=encoding,
        key="the whole secret string, whsec_ included, as UTF-8",
    )


SIGNATURE_SCHEMES = (
    SignatureScheme(
        name="standard-webhooks-v1",
        always=True,
        headers=[HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE],
        algorithm="HMAC-SHA256",
        signed_content="{webhook-id}.{webhook-timestamp}.{body}",
        encoding="v1,<base64>, space-separated while a rotated-out secret still signs",
        key="the bytes of the secret's base64 after whsec_",
    ),
    _style_scheme("github", HEADER_GITHUB_SIGNATURE, "sha256=<hex>"),
    _style_scheme("dub", HEADER_DUB_SIGNATURE, "<hex>"),
)
