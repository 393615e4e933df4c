"""The endpoint registry API: /v1/endpoints for an account's receivers.

Each route is a thin handler around an operation (``create_endpoint``, ``update_endpoint``,
``delete_endpoint``, ``rotate_endpoint_secret``, ``endpoint_of``, ``endpoints_of``) that takes
the caller's principal, the endpoint id, the decoded body and the ``If-Match`` value, raises
``ApiError`` and knows nothing of HTTP requests, so the customer portal makes the same changes.

Concurrency: every answer that shows one endpoint carries its ``ETag`` (its version); PATCH,
DELETE and rotate-secret honour ``If-Match`` (412 ``precondition_failed`` with the current
``ETag`` when it no longer matches). Without ``If-Match`` the change is applied to the latest
version, however many writes came first: last writer wins, field by field (a PATCH of the URL
never brings back a secret rotated meanwhile).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.ingest.api_types import (
    EndpointCreate,
    EndpointPatch,
    Preview,
    PreviewRequest,
    RotatedSecret,
)
from services.ingest.auth import Authenticator, Principal, insufficient_scope
from services.ingest.responses import ApiError, invalid, struct_response
from services.ingest.urls import url_problems
from shared.kafka.endpoint_store import (
    Change,
    EndpointExists,
    EndpointStore,
    VersionMismatch,
    WriteContended,
)
from shared.kafka.operational import OperationalWebhooks
from shared.model.endpoint_extras import extras_problems, logged
from shared.model.errors import InvalidInput, Problem, TemplateError
from shared.model.formats import build_request, sample_click
from shared.model.messages import (
    Endpoint,
    EndpointFilters,
    EndpointSecret,
    PayloadFormat,
    decode_json,
    validate_click,
    validation_problem,
)
from shared.model.operational import switched_by_hand
from shared.model.signing import generate_secret, is_valid_secret, webhook_id
from shared.model.templates import template_problems
from shared.ops.settings import Settings

# A strong entity tag, or a bare number (a client that dropped the quotes means the same).
_ENTITY_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*|\s*([0-9]+)\s*')


# Spelled out of the class, whose ``list`` handler hides the builtin there.
Endpoints = list[Endpoint]


def new_endpoint_id() -> str:
    return "ep_" + uuid.uuid4().hex[:24]


def etag(endpoint: Endpoint) -> str:
    """The endpoint's version as a strong entity tag: ``"57"``."""
    return f'"{endpoint.version}"'


def if_match_versions(header: str | None) -> frozenset[int] | None:
    """The versions an ``If-Match`` header allows; None when it sets no condition (absent, or
    ``*``: any version of an existing endpoint). Weak tags never match (RFC 9110 compares
    strongly), nor do tags that are not one of our versions: the write is refused."""
    if header is None or header.strip() == "*":
        return None
    versions: set[int] = set()
    for item in header.split(","):
        match = _ENTITY_TAG.fullmatch(item)
        if match is None or match.group(1):
            continue
        text = match.group(2) if match.group(2) is not None else match.group(3)
        if text.isdigit():
            versions.add(int(text))
    return frozenset(versions)


def _decode_body(raw: bytes, kind: type[Any]) -> Any:
    obj = decode_json(raw)
    # First, so that a bad header or key is named (msgspec's messages cannot name a key).
    problems = extras_problems(obj) if isinstance(obj, dict) else []
    if problems:
        raise InvalidInput("invalid endpoint", problems)
    try:
        return msgspec.convert(obj, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise InvalidInput("invalid endpoint", [validation_problem(exc)]) from None


# The id of the sample click that templates are checked and previewed with.
SAMPLE_EVENT_ID = "evt_clickhook_sample"


def _check_template(endpoint: Endpoint, template: str | None) -> None:
    """422 unless ``template`` parses and renders the sample click to JSON within the limits
    (``None``: nothing to check)."""
    if template is None:
        return
    sample = sample_click(endpoint, SAMPLE_EVENT_ID, datetime.now(UTC))
    problems = template_problems(template, sample)
    if problems:
        raise ApiError(422, "invalid_request", "invalid template", problems)


def _check_format(fmt: PayloadFormat, template: str | None, template_sent: bool) -> None:
    """A template goes with format "template", which needs one."""
    if fmt == "template" and not template:
        problem = Problem("template", 'is required with format "template"')
        raise ApiError(422, "invalid_request", "invalid endpoint", [problem])
    if fmt != "template" and template_sent and template is not None:
        problem = Problem("template", 'is used only with format "template"')
        raise ApiError(422, "invalid_request", "invalid endpoint", [problem])


def decoded(raw: bytes, kind: type[Any]) -> Any:
    """A request body (or one line of an import) as ``kind``; a 422 listing what is wrong."""
    try:
        return _decode_body(raw, kind)
    except InvalidInput as exc:
        raise invalid(exc) from None


def _shown(endpoint: Endpoint, *, status: int = 200, **extra: Any) -> web.Response:
    """One endpoint as the API shows it, with its ``ETag``."""
    return web.json_response(
        {**endpoint.public_view(), **extra}, status=status, headers={"etag": etag(endpoint)}
    )


def _patched(body: EndpointPatch, now: datetime) -> dict[str, Any]:
    """The fields a PATCH sets, as the endpoint stores them."""
    changes = {
        name: value
        for name in body.__struct_fields__
        if (value := getattr(body, name)) is not msgspec.UNSET
    }
    if changes.get("enabled") is True:
        changes["disabled_reason"] = None
    if "filters" in changes:
        changes["filters"] = _stored_filters(changes["filters"])
    if "signature_styles" in changes:
        changes["signature_styles"] = list(dict.fromkeys(changes["signature_styles"]))
    return {**changes, "updated_at": now}


def _stored_filters(filters: EndpointFilters) -> EndpointFilters:
    """The request's strict filters as the tolerant struct the endpoint record keeps."""
    return EndpointFilters(**msgspec.structs.asdict(filters))


@dataclass(frozen=True, slots=True)
class Rotation:
    """A rotated secret: the endpoint as written, its new secret, and when the previous one
    stops signing."""

    endpoint: Endpoint
    secret: str
    previous_secret_expires_at: datetime

    def response(self) -> RotatedSecret:
        return RotatedSecret(
            id=self.endpoint.id,
            secret=self.secret,
            previous_secret_expires_at=self.previous_secret_expires_at,
        )


def _rotated(secret: str, now: datetime, grace_end: datetime) -> Change:
    """The change that makes ``secret`` current and keeps the others signing until
    ``grace_end``; applied to whatever version is latest when the write happens."""

    def rotate(current: Endpoint) -> Endpoint:
        kept = [
            EndpointSecret(s.secret, s.expires_at or grace_end)
            for s in current.secrets
            if s.expires_at is None or s.expires_at > now
        ]
        return msgspec.structs.replace(
            current, secrets=[EndpointSecret(secret), *kept], updated_at=now
        )

    return rotate


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
        self._operational = OperationalWebhooks(settings, producer)
        # The delivery log's short health of an endpoint, shown by GET (set by create_app).
        self.delivery_summary: Callable[[str], Awaitable[msgspec.Struct | None]] | None = None

    def stamp(self) -> int | None:
        """How far the endpoint table has read, for a click published now (``EndpointStore``)."""
        return self._store.stamp()

    def principal(self, request: web.Request) -> Principal:
        principal = self._auth.authenticate(request)
        if principal.account_id is None and not principal.is_admin:
            raise insufficient_scope("manage endpoints")
        return principal

    def owned(self, request: web.Request) -> Endpoint:
        """The endpoint named in the path, if the caller may manage it; else a 404."""
        return self.endpoint_of(self.principal(request), request.match_info["endpoint_id"])

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
        return decoded(await request.read(), kind)

    # --- handlers ----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        principal = self.principal(request)
        body: EndpointCreate = await self._read(request, EndpointCreate)
        endpoint, secret = await self.create_endpoint(principal, body)
        return _shown(endpoint, status=201, secret=secret)

    async def list(self, request: web.Request) -> web.Response:
        found = self.endpoints_of(self.principal(request), request.query.get("account_id"))
        return web.json_response({"data": [e.public_view() for e in found]})

    async def get(self, request: web.Request) -> web.Response:
        endpoint = await self.latest_endpoint_of(
            self.principal(request), request.match_info["endpoint_id"]
        )
        summary = (
            None if self.delivery_summary is None else await self.delivery_summary(endpoint.id)
        )
        if summary is None:
            return _shown(endpoint)
        return _shown(endpoint, delivery=msgspec.to_builtins(summary))

    async def patch(self, request: web.Request) -> web.Response:
        principal = self.principal(request)
        body: EndpointPatch = await self._read(request, EndpointPatch)
        updated = await self.update_endpoint(
            principal, request.match_info["endpoint_id"], body, request.headers.get("if-match")
        )
        return _shown(updated)

    async def preview(self, request: web.Request) -> web.Response:
        principal = self.principal(request)
        # No body at all: the endpoint as stored, with a sample click.
        body = await self._read(request, PreviewRequest) if request.can_read_body else None
        endpoint_id = request.match_info["endpoint_id"]
        preview = self.preview_endpoint(principal, endpoint_id, body or PreviewRequest())
        return struct_response(preview)

    async def delete(self, request: web.Request) -> web.Response:
        await self.delete_endpoint(
            self.principal(request),
            request.match_info["endpoint_id"],
            request.headers.get("if-match"),
        )
        return web.Response(status=204)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        rotation = await self.rotate_endpoint_secret(
            self.principal(request),
            request.match_info["endpoint_id"],
            request.headers.get("if-match"),
        )
        return struct_response(rotation.response(), headers={"etag": etag(rotation.endpoint)})

    # --- operations (the API's and the portal's) ---------------------------------------------

    def endpoint_of(self, principal: Principal, endpoint_id: str) -> Endpoint:
        """The endpoint, if ``principal`` may manage it; else a 404 (another account's
        endpoint looks exactly like a missing one)."""
        endpoint = self._store.table.get(endpoint_id)
        if endpoint is None or not principal.may_manage(endpoint.account_id):
            raise ApiError(404, "not_found", "no such endpoint")
        return endpoint

    async def latest_endpoint_of(self, principal: Principal, endpoint_id: str) -> Endpoint:
        """As ``endpoint_of``, but an endpoint this instance has not read yet (created on
        another instance a moment ago) is looked for up to the end of the topic first."""
        if self._store.table.get(endpoint_id) is None:
            await self._store.read_to_end()
        return self.endpoint_of(principal, endpoint_id)

    def endpoints_of(self, principal: Principal, account_id: str | None) -> Endpoints:
        """The principal's account's endpoints, oldest first; an admin names the account, or
        gets every endpoint."""
        account = principal.account_id or account_id
        found = self._store.table.for_account(account) if account else self._store.table.all()
        return sorted(found, key=lambda endpoint: endpoint.created_at)

    async def create_endpoint(
        self, principal: Principal, body: EndpointCreate
    ) -> tuple[Endpoint, str]:
        """Register an endpoint; returns it (with its version) and its secret."""
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
        _check_format(body.format, body.template, template_sent=True)
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
            filters=_stored_filters(body.filters),
            rate_limit_per_s=body.rate_limit_per_s,
            enabled=body.enabled,
            secrets=[EndpointSecret(secret)],
            format=body.format,
            template=body.template,
            signature_styles=list(dict.fromkeys(body.signature_styles)),
            headers=body.headers,
            metadata=body.metadata,
            created_at=now,
            updated_at=now,
        )
        _check_template(endpoint, endpoint.template)
        try:
            created = await self._store.create(endpoint)
        except EndpointExists:  # an id of 96 random bits taken: retrying is the whole fix
            raise ApiError(409, "conflict", "endpoint id taken; send the request again") from None
        except WriteContended as exc:  # fencing is per topic: a new id meets it all the same
            raise _write_refused(exc) from None
        return created, secret

    async def update_endpoint(
        self,
        principal: Principal,
        endpoint_id: str,
        body: EndpointPatch,
        if_match: str | None = None,
    ) -> Endpoint:
        """Set the fields ``body`` names on the endpoint's latest version; returns it."""
        latest = await self.latest_endpoint_of(principal, endpoint_id)
        if isinstance(body.url, str):
            self._check_url(body.url)
        if isinstance(body.template, str):
            _check_template(latest, body.template)
        fields = _patched(body, datetime.now(UTC))
        was_enabled = latest.enabled

        def patch(current: Endpoint) -> Endpoint:
            # On the version the write applies to: a concurrent change of format or template
            # is seen here (a template already stored was checked when written).
            nonlocal was_enabled
            was_enabled = current.enabled
            changed = msgspec.structs.replace(current, **fields)
            _check_format(changed.format, changed.template, "template" in fields)
            return changed

        updated = await self._change(endpoint_id, patch, if_match)
        await self._report_switch(was_enabled, updated)
        return updated

    async def _report_switch(self, was_enabled: bool, endpoint: Endpoint) -> None:
        """Tell the operator of an endpoint a person disabled or enabled again."""
        if was_enabled == endpoint.enabled:
            return
        event = switched_by_hand(endpoint)
        await self._operational.publish_within(event, self._settings.publish_timeout_s)

    def preview_endpoint(
        self, principal: Principal, endpoint_id: str, body: PreviewRequest
    ) -> Preview:
        """The request a click would be delivered with, as the endpoint is or with the format
        and template of ``body``; nothing is sent. 422 when the template fails on the click."""
        endpoint = self.endpoint_of(principal, endpoint_id)
        changes: dict[str, Any] = {}
        if body.format is not msgspec.UNSET:
            changes["format"] = body.format
        if body.template is not msgspec.UNSET:
            changes["template"] = body.template
        endpoint = msgspec.structs.replace(endpoint, **changes)
        _check_format(endpoint.format, endpoint.template, template_sent=False)
        now = datetime.now(UTC)
        event = self._preview_event(endpoint, body.event, now)
        try:
            rendered, headers = build_request(
                endpoint,
                event,
                webhook_id=webhook_id(event["id"], endpoint.id),
                timestamp_s=int(now.timestamp()),
                now=now,
            )
        except TemplateError as exc:
            problem = Problem("template", str(exc))
            raise ApiError(
                422, "invalid_request", "the template fails on this click", [problem]
            ) from None
        return Preview(
            body=rendered.decode(),
            headers=logged(headers, endpoint.headers),
            event=event,
        )

    @staticmethod
    def _preview_event(
        endpoint: Endpoint, given: dict[str, Any] | None, now: datetime
    ) -> dict[str, Any]:
        if given is None:
            return sample_click(endpoint, SAMPLE_EVENT_ID, now)
        try:
            click = validate_click(given, now=now, default_id=SAMPLE_EVENT_ID)
        except InvalidInput as exc:
            problems = [Problem(f"event.{p.field}", p.problem) for p in exc.problems]
            raise ApiError(422, "invalid_request", "invalid event", problems) from None
        return click.payload

    async def delete_endpoint(
        self, principal: Principal, endpoint_id: str, if_match: str | None = None
    ) -> None:
        await self.latest_endpoint_of(principal, endpoint_id)
        try:
            deleted = await self._store.delete(endpoint_id, if_match=if_match_versions(if_match))
        except (VersionMismatch, WriteContended) as exc:
            raise _write_refused(exc) from None
        if not deleted:
            raise ApiError(404, "not_found", "no such endpoint")

    async def rotate_endpoint_secret(
        self, principal: Principal, endpoint_id: str, if_match: str | None = None
    ) -> Rotation:
        """A new current secret; the others keep signing for the rotation grace period."""
        await self.latest_endpoint_of(principal, endpoint_id)
        now = datetime.now(UTC)
        grace_end = now + timedelta(seconds=self._settings.secret_rotation_grace_s)
        secret = generate_secret()
        rotated = await self._change(endpoint_id, _rotated(secret, now, grace_end), if_match)
        return Rotation(rotated, secret, grace_end)

    async def _change(self, endpoint_id: str, change: Change, if_match: str | None) -> Endpoint:
        try:
            updated = await self._store.update(
                endpoint_id, change, if_match=if_match_versions(if_match)
            )
        except (VersionMismatch, WriteContended) as exc:
            raise _write_refused(exc) from None
        if updated is None:  # deleted meanwhile
            raise ApiError(404, "not_found", "no such endpoint")
        return updated


def _write_refused(exc: VersionMismatch | WriteContended) -> ApiError:
    if isinstance(exc, VersionMismatch):
        current = etag(exc.current)
        return ApiError(
            412,
            "precondition_failed",
            f"the endpoint changed: its ETag is now {current}",
            [Problem("If-Match", f"does not match the current ETag {current}")],
            headers={"etag": current},
        )
    return ApiError(
        409,
        "conflict",
        f"other endpoint writes won {exc.attempts} times in a row; send it again",
    )
