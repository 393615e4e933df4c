"""Portal access: one-time links, session cookies and CSRF tokens, all signed and
self-contained, so that any ingest replica accepts what another issued.

- A link (``POST /v1/portal/sessions``) carries the account, a random nonce and an expiry five
  minutes ahead, signed with HMAC-SHA256 under the portal key (``CLICKHOOK_PORTAL_KEY``: every
  replica has the same). Without a key of at least ``MIN_KEY_BYTES`` random bytes there is no
  portal at all (fail closed): never a key from the source, nor one derived from the API
  tokens (rotating a token would end every customer's session).
- Opening it checks the signature and expiry, and that this instance has not seen the nonce
  (one-time use). That memory is per instance, the most a stateless design allows: behind
  several replicas a leaked link could be opened once per replica within its five minutes.
  The link leaves the address bar at once (a redirect), and is useless after five minutes.
- A token or cookie that is not what we issued (altered, not ASCII, not base64, not JSON) is
  simply not valid: ``None``, never an exception.
- A used (or expired) link opened again by a browser whose session is for the link's account
  goes to the portal: a reload of the shortener's iframe, or the back button, is not an error.
  Nothing is granted by the link then; with no session or another account's, it is not valid.
- The session cookie holds the account, a fresh session id and an expiry an hour ahead, signed
  the same way. The CSRF token of a session is an HMAC of its id: forms carry it and it is
  checked on every write, since the cookie must be ``SameSite=None`` to work in the shortener's
  iframe.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import msgspec

from shared.ops.settings import Settings

LINK_TTL_S = 300
SESSION_TTL_S = 3600
KEY_CONTEXT = b"clickhook portal v1"
MIN_KEY_BYTES = 32
KEY_HINT = "CLICKHOOK_PORTAL_KEY: at least 32 random bytes, hex or base64 (openssl rand -base64 32)"


class Claims(msgspec.Struct, frozen=True):
    kind: str  # "link" or "session": a link is never accepted as a session, nor the reverse
    account_id: str
    nonce: str
    expires_at_s: int


_claims_decoder = msgspec.json.Decoder(Claims)
_encoder = msgspec.json.Encoder()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PortalKeyError(ValueError):
    """No usable portal key: the portal stays off (``reason`` says why, for the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; {KEY_HINT}")
        self.reason = reason


def portal_key(settings: Settings) -> bytes:
    """The signing key, from ``CLICKHOOK_PORTAL_KEY`` (hex or base64 of at least
    ``MIN_KEY_BYTES`` bytes); ``PortalKeyError`` when it is missing or too short."""
    if not settings.portal_key:
        raise PortalKeyError("no portal key")
    raw = _decode_key(settings.portal_key.strip())
    if raw is None:
        raise PortalKeyError("the portal key is neither hex nor base64")
    if len(raw) < MIN_KEY_BYTES:
        raise PortalKeyError(f"the portal key is {len(raw)} bytes, fewer than {MIN_KEY_BYTES}")
    return hashlib.sha256(KEY_CONTEXT + b"\x00" + raw).digest()


def _decode_key(text: str) -> bytes | None:
    if not text.isascii():
        return None
    with contextlib.suppress(ValueError):
        return bytes.fromhex(text)
    try:
        # Standard or URL-safe alphabet, padding optional: what key generators print.
        normalised = text.replace("-", "+").replace("_", "/")
        return base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
    except binascii.Error:
        return None


@dataclass(frozen=True, slots=True)
class Session:
    account_id: str
    session_id: str
    expires_at_s: int
    csrf_token: str


class PortalSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self._redeemed: dict[str, int] = {}  # link nonce -> its expiry (forgotten after it)

    def _sign(self, claims: Claims) -> str:
        payload = _b64(_encoder.encode(claims))
        return f"{payload}.{self._mac(payload)}"

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def _verify(self, token: str, kind: str, now_s: float) -> Claims | None:
        claims = self._authentic(token, kind)
        if claims is None or claims.expires_at_s <= now_s:
            return None
        return claims

    def _authentic(self, token: str, kind: str) -> Claims | None:
        """The claims of a token we signed, of that kind, whether expired or not."""
        # What we issue is ASCII; compare_digest raises on other text (a 500, not a refusal).
        if not token.isascii():
            return None
        payload, _, mac = token.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            claims = _claims_decoder.decode(_unb64(payload))
        except (msgspec.DecodeError, ValueError):
            return None
        return claims if claims.kind == kind else None

    def link_token(self, account_id: str, now_s: float | None = None) -> tuple[str, int]:
        """A one-time link token for the account, and when it expires (unix seconds)."""
        expires = int((now_s or time.time()) + LINK_TTL_S)
        claims = Claims("link", account_id, secrets.token_urlsafe(16), expires)
        return self._sign(claims), expires

    def redeem(self, token: str, now_s: float | None = None) -> str | None:
        """A session cookie value for a valid link seen here for the first time; else None."""
        now_s = now_s or time.time()
        claims = self._verify(token, "link", now_s)
        if claims is None:
            return None
        self._forget_expired(now_s)
        if claims.nonce in self._redeemed:
            return None
        self._redeemed[claims.nonce] = claims.expires_at_s
        session = Claims(
            "session", claims.account_id, secrets.token_urlsafe(16), int(now_s + SESSION_TTL_S)
        )
        return self._sign(session)

    def link_account(self, token: str) -> str | None:
        """The account of a link we issued, even used or expired (None for any other text).
        Only for a browser that already holds a session: the link grants nothing by itself."""
        claims = self._authentic(token, "link")
        return None if claims is None else claims.account_id

    def session(self, cookie: str | None, now_s: float | None = None) -> Session | None:
        if not cookie:
            return None
        claims = self._verify(cookie, "session", now_s or time.time())
        if claims is None:
            return None
        return Session(claims.account_id, claims.nonce, claims.expires_at_s, self._csrf(claims))

    def _csrf(self, claims: Claims) -> str:
        return _b64(hmac.new(self._key, b"csrf\x00" + claims.nonce.encode(), "sha256").digest())

    def _forget_expired(self, now_s: float) -> None:
        for nonce in [n for n, expires in self._redeemed.items() if expires <= now_s]:
            del self._redeemed[nonce]


def csrf_matches(session: Session, presented: str | None) -> bool:
    if presented is None or not presented.isascii():
        return False
    return hmac.compare_digest(session.csrf_token, presented)
