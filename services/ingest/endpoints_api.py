"""The endpoint registry API: /v1/endpoints for an account's receivers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.ingest.api_types import (
    EndpointCreate,
    EndpointPatch,
    ReplayReport,
    ReplayRequest,
    RotatedSecret,
)
from services.ingest.auth import Authenticator, Principal
from services.ingest.responses import ApiError, invalid, struct_response
from services.ingest.urls import url_problems
from shared.kafka.dead_letters import replay
from shared.kafka.endpoint_store import EndpointStore
from shared.model.errors import InvalidInput, Problem
from shared.model.messages import (
    Endpoint,
    EndpointSecret,
    decode_json,
)
from shared.model.signing import generate_secret, is_valid_secret
from shared.ops.settings import Settings


def new_endpoint_id() -> str:
    return "ep_" + uuid.uuid4().hex[:24]


def _decode_body(raw: bytes, kind: type[Any]) -> Any:
    obj = decode_json(raw)
    try:
        return msgspec.convert(obj, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidInput("invalid endpoint", [Problem("$", str(exc))]) from None


class EndpointApi:
    def __init__(
        self,
        settings: Settings,
        store: EndpointStore,
        auth: Authenticator,
        producer: AIOKafkaProducer,
    ) -> None:
        self._settings = settings
        self._store = store
        self._auth = auth
        self._producer = producer

    def _principal(self, request: web.Request) -> Principal:
        principal = self._auth.authenticate(request)
        if principal.account_id is None and not principal.is_admin:
            raise ApiError(401, "insufficient_scope", "this token may not manage endpoints")
        return principal

    def _owned(self, request: web.Request) -> tuple[Principal, Endpoint]:
        principal = self._principal(request)
        endpoint = self._store.table.get(request.match_info["endpoint_id"])
        # Another account's endpoint looks exactly like a missing one.
        if endpoint is None or not principal.may_manage(endpoint.account_id):
            raise ApiError(404, "not_found", "no such endpoint")
        return principal, endpoint

    def owned(self, request: web.Request) -> Endpoint:
        """The endpoint named in the path, if the caller may manage it; else a 404."""
        return self._owned(request)[1]

    def _check_url(self, url: str) -> None:
        problems = url_problems(
            url, allow_http=self._settings.allow_http, allowed=self._settings.allowed_cidrs
        )
        if problems:
            raise ApiError(
                422,
                "invalid_request",
                "invalid endpoint url",
                [Problem("url", p) for p in problems],
            )

    async def _read(self, request: web.Request, kind: type[Any]) -> Any:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send application/json")
        try:
            return _decode_body(await request.read(), kind)
        except InvalidInput as exc:
            raise invalid(exc) from None

    async def create(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        body: EndpointCreate = await self._read(request, EndpointCreate)
        account_id = principal.account_id or body.account_id
        if account_id is None:
            raise ApiError(
                422,
                "invalid_request",
                "admin tokens must name account_id",
                [Problem("account_id", "is required for admin tokens")],
            )
        if principal.account_id is not None and body.account_id not in (None, account_id):
            raise ApiError(404, "not_found", "no such account")
        self._check_url(body.url)
        now = datetime.now(UTC)
        secret = body.secret if body.secret is not None else generate_secret()
        if not is_valid_secret(secret):
            raise ApiError(
                422,
                "invalid_request",
                "invalid secret",
                [Problem("secret", "must be whsec_ followed by base64 of 24 to 64 bytes")],
            )
        endpoint = Endpoint(
            id=new_endpoint_id(),
            account_id=account_id,
            url=body.url,
            description=body.description,
            filters=body.filters,
            rate_limit_per_s=body.rate_limit_per_s,
            enabled=body.enabled,
            secrets=[EndpointSecret(secret)],
            format=body.format,
            signature_styles=list(dict.fromkeys(body.signature_styles)),
            created_at=now,
            updated_at=now,
        )
        await self._store.put(endpoint)
        return web.json_response({**endpoint.public_view(), "secret": secret}, status=201)

    async def list(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        account = principal.account_id or request.query.get("account_id")
        found = self._store.table.for_account(account) if account else self._store.table.all()
        found.sort(key=lambda endpoint: endpoint.created_at)
        return web.json_response({"data": [e.public_view() for e in found]})

    async def get(self, request: web.Request) -> web.Response:
        _, endpoint = self._owned(request)
        return web.json_response(endpoint.public_view())

    async def patch(self, request: web.Request) -> web.Response:
        _, endpoint = self._owned(request)
        body: EndpointPatch = await self._read(request, EndpointPatch)
        changes = {
            name: value
            for name in body.__struct_fields__
            if (value := getattr(body, name)) is not msgspec.UNSET
        }
        if "url" in changes:
            self._check_url(changes["url"])
        if changes.get("enabled") is True:
            changes["disabled_reason"] = None
        if "signature_styles" in changes:
            changes["signature_styles"] = list(dict.fromkeys(changes["signature_styles"]))
        updated = msgspec.structs.replace(endpoint, **changes, updated_at=datetime.now(UTC))
        await self._store.put(updated)
        return web.json_response(updated.public_view())

    async def delete(self, request: web.Request) -> web.Response:
        _, endpoint = self._owned(request)
        await self._store.delete(endpoint.id)
        return web.Response(status=204)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        _, endpoint = self._owned(request)
        now = datetime.now(UTC)
        grace_end = now + timedelta(seconds=self._settings.secret_rotation_grace_s)
        secret = generate_secret()
        kept = [
            EndpointSecret(s.secret, s.expires_at or grace_end)
            for s in endpoint.secrets
            if s.expires_at is None or s.expires_at > now
        ]
        updated = msgspec.structs.replace(
            endpoint, secrets=[EndpointSecret(secret), *kept], updated_at=now
        )
        await self._store.put(updated)
        return struct_response(
            RotatedSecret(id=endpoint.id, secret=secret, previous_secret_expires_at=grace_end)
        )

    async def replay(self, request: web.Request) -> web.Response:
        """Put this endpoint's dead letters of a window back into delivery."""
        _, endpoint = self._owned(request)
        body: ReplayRequest = await self._read(request, ReplayRequest)
        if body.since.tzinfo is None or (body.until is not None and body.until.tzinfo is None):
            raise ApiError(422, "invalid_request", "times need a UTC offset, e.g. Z")
        if body.until is not None and body.until <= body.since:
            raise ApiError(422, "invalid_request", "until must be after since")
        until_ms = int(body.until.timestamp() * 1000) if body.until is not None else None
        report = await replay(
            self._settings,
            self._producer,
            endpoint.id,
            int(body.since.timestamp() * 1000),
            until_ms,
        )
        return struct_response(
            ReplayReport(
                endpoint_id=endpoint.id,
                matched=report.matched,
                replayed=report.replayed,
                already_delivered=report.already_delivered,
            )
        )
