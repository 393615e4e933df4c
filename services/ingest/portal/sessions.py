"""Portal access: one-time links, session cookies and CSRF tokens, all signed and
self-contained, so that any ingest replica accepts what another issued.

- A link (``POST /v1/portal/sessions``) carries the account, a random nonce and an expiry five
  minutes ahead, signed with HMAC-SHA256 under the portal key (``CLICKHOOK_PORTAL_KEY``, or one
  derived from ``CLICKHOOK_API_KEYS``: every replica has the same).
- Opening it checks the signature and expiry, and that this instance has not seen the nonce
  (one-time use). That memory is per instance, the most a stateless design allows: behind
  several replicas a leaked link could be opened once per replica within its five minutes.
  The link leaves the address bar at once (a redirect), and is useless after five minutes.
- The session cookie holds the account, a fresh session id and an expiry an hour ahead, signed
  the same way. The CSRF token of a session is an HMAC of its id: forms carry it and it is
  checked on every write, since the cookie must be ``SameSite=None`` to work in the shortener's
  iframe.
"""

from __future__ import annotations

import base64
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


def portal_key(settings: Settings) -> bytes:
    """The signing key: the setting, or a key derived from the API tokens (which every ingest
    replica shares), so a deployment works without one more secret."""
    if settings.portal_key:
        return hashlib.sha256(KEY_CONTEXT + b"\x00" + settings.portal_key.encode()).digest()
    tokens = "\x00".join(sorted(key.token for key in settings.api_keys))
    return hashlib.sha256(KEY_CONTEXT + b"\x01" + tokens.encode()).digest()


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
        payload, _, mac = token.partition(".")
        if not mac or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            claims = _claims_decoder.decode(_unb64(payload))
        except (msgspec.DecodeError, ValueError):
            return None
        if claims.kind != kind or claims.expires_at_s <= now_s:
            return None
        return claims

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
    return presented is not None and hmac.compare_digest(session.csrf_token, presented)
