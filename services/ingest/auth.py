"""Bearer-token authentication and the scopes of the ingest API."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from services.ingest.responses import ApiError
from shared.ops.settings import ApiKey


@dataclass(frozen=True, slots=True)
class Principal:
    scope: str

    @property
    def may_publish(self) -> bool:
        return self.scope in ("publish", "admin")

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    @property
    def account_id(self) -> str | None:
        return self.scope.removeprefix("account:") if self.scope.startswith("account:") else None

    def may_manage(self, account_id: str) -> bool:
        return self.is_admin or self.account_id == account_id


def insufficient_scope(action: str) -> ApiError:
    """A known token whose scope does not allow the route: 403, as RFC 6750 (section 3.1) and
    the APIs people know answer; 401 stays for a missing or unknown token."""
    return ApiError(403, "insufficient_scope", f"this token may not {action}")


class Authenticator:
    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self._keys = [(key.token.encode(), key.scope) for key in keys]

    def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "missing or malformed bearer token")
        # aiohttp hands non-UTF-8 header bytes over as lone surrogates: take the raw bytes back.
        presented = token.strip().encode("utf-8", "surrogateescape")
        found: str | None = None
        # Compare against every key, without stopping early, so timing reveals nothing.
        for candidate, scope in self._keys:
            if hmac.compare_digest(candidate, presented) and found is None:
                found = scope
        if found is None:
            raise ApiError(401, "unauthorized", "unknown token")
        return Principal(found)
