"""The customer portal under /portal/: server-rendered pages (aiohttp-jinja2) over the same
code as the API. One account per session; another account's endpoint is a 404 page."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
import msgspec
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from services.ingest.api_types import (
    EndpointCreate,
    EndpointPatch,
    PortalSession,
    PortalSessionRequest,
    PreviewRequest,
    ReplayRequest,
)
from services.ingest.auth import Authenticator, Principal, insufficient_scope
from services.ingest.delivery_log.api import DeliveryLogApi, attempt_filter, decode_cursor
from services.ingest.endpoints_api import EndpointApi, etag
from services.ingest.portal import errors
from services.ingest.portal.errors import Plain
from services.ingest.portal.sessions import (
    KEY_HINT,
    SESSION_TTL_S,
    PortalKeyError,
    PortalSigner,
    Session,
    csrf_matches,
    portal_key,
)
from services.ingest.replay_api import ReplayApi, replay_status
from services.ingest.responses import RETRY_AFTER_S, ApiError, read_json_body, struct_response
from shared.kafka.endpoint_store import EndpointStore
from shared.model.errors import DeliveryLogUnavailable
from shared.model.messages import MASK, Endpoint, validation_problem
from shared.model.times import to_ms
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
COOKIE = "clickhook_portal"
PORTAL_PATH = "/portal/"
LOG_PAGE = 25
LOG_FILTERS = ("status", "event_id")
DEAD_LETTER_PAGE = 25
REPLAY_WINDOW = timedelta(days=30)  # webhook.dlq's retention: "replay all" covers every letter
LIST_FIELDS = ("event_types", "link_ids", "domains", "tags")
NOTICES = {
    "created": "Endpoint created. Send it a test event to see a delivery.",
    "saved": "Changes saved.",
    "enabled": "Endpoint enabled.",
    "disabled": "Endpoint disabled: no deliveries until you enable it again.",
    "rotated": "New secret made. The old one keeps signing for the grace period.",
    "test_sent": "Test event sent. Its attempt appears in the log below within seconds.",
    "replay_started": "Replay started: the dead letters go back into delivery.",
    "deleted": "Endpoint deleted.",
}
PORTAL_SESSION_PATH = "/v1/portal/sessions"


def security_headers(frame_ancestors: str) -> dict[str, str]:
    """A strict policy: our own scripts, styles and fetches only, no inline code, forms that
    post only here, framed only by the origins the operator names."""
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; base-uri 'none';"
        f" frame-ancestors {frame_ancestors}"
    )
    return {
        "content-security-policy": policy,
        # Pages hold secrets and account data: never kept by a browser or a proxy.
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
    }


class PortalError(Exception):
    """A page-level refusal, shown as a page (not JSON)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def _expired() -> PortalError:
    return PortalError(
        401,
        "Session expired",
        "This portal session is over or was never opened. Open the portal again from your"
        " dashboard to get a new link.",
    )


def _not_found() -> PortalError:
    return PortalError(404, "Not found", "There is no such endpoint in your account.")


def _split_list(raw: str) -> list[str] | None:
    items = [item.strip() for item in re.split(r"[,\n]", raw) if item.strip()]
    return items or None


def form_fields(form: Mapping[str, Any], signature_styles: list[str]) -> dict[str, Any]:
    """An endpoint form as the API's JSON body: the same structs validate both."""
    fields: dict[str, Any] = {
        "url": str(form.get("url", "")).strip(),
        "description": str(form.get("description", "")),
        "format": str(form.get("format", "standard")),
        "signature_styles": signature_styles,
        "filters": {
            name: found for name in LIST_FIELDS if (found := _split_list(str(form.get(name, ""))))
        },
    }
    fields["rate_limit_per_s"] = _number(str(form.get("rate_limit_per_s", "")).strip())
    fields["template"] = _template(form)
    return fields


def _template(form: Mapping[str, Any]) -> str | None:
    """The form's template; an empty box is none (browsers send textarea lines as CRLF)."""
    text = str(form.get("template", "")).replace("\r\n", "\n")
    return text if text.strip() else None


def _number(text: str) -> float | str | None:
    """A form's number: None when empty; text that is not one is kept for validation to name."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


@dataclass(frozen=True, slots=True)
class PortalDeps:
    settings: Settings
    auth: Authenticator
    store: EndpointStore
    endpoints: EndpointApi
    deliveries: DeliveryLogApi
    replays: ReplayApi


class Portal:
    def __init__(self, deps: PortalDeps, key: bytes) -> None:
        self._deps = deps
        self._signer = PortalSigner(key)
        self._headers = security_headers(deps.settings.portal_frame_ancestors)

    # --- access ---------------------------------------------------------------------------------

    async def create_session(self, request: web.Request) -> web.Response:
        """POST /v1/portal/sessions: a one-time link for the token's account (admin: any)."""
        principal = self._deps.auth.authenticate(request)
        body = (
            await read_json_body(request, PortalSessionRequest, "invalid portal session")
            if request.body_exists
            else PortalSessionRequest()
        )
        account_id = principal.account_id or (body.account_id if principal.is_admin else None)
        if account_id is None:
            if principal.is_admin:
                raise ApiError(422, "invalid_request", "admin tokens must name account_id")
            raise insufficient_scope("open the portal")
        if principal.account_id is not None and body.account_id not in (None, account_id):
            raise ApiError(404, "not_found", "no such account")
        token, expires_s = self._signer.link_token(account_id)
        base = self._deps.settings.public_url or f"{request.scheme}://{request.host}"
        url = f"{base}{PORTAL_PATH}open?{urlencode({'token': token})}"
        expires_at = datetime.fromtimestamp(expires_s, UTC)
        return struct_response(PortalSession(url=url, expires_at=expires_at), status=201)

    async def open(self, request: web.Request) -> web.Response:
        token = request.query.get("token", "")
        cookie = self._signer.redeem(token)
        if cookie is None:
            if self._reopened_in_its_session(request, token):
                raise web.HTTPSeeOther(PORTAL_PATH)
            raise PortalError(
                401,
                "Link not valid",
                "This portal link has expired or was already used. Open the portal again"
                " from your dashboard.",
            )
        response = web.HTTPSeeOther(PORTAL_PATH)
        secure = request.secure or self._deps.settings.public_url.startswith("https://")
        response.set_cookie(
            COOKIE,
            cookie,
            path=PORTAL_PATH,
            max_age=SESSION_TTL_S,
            httponly=True,
            secure=secure,
            # In the shortener's iframe the portal is a third party: only SameSite=None
            # (with Secure, partitioned per top-level site) reaches it there. Writes carry a
            # CSRF token either way.
            samesite="None" if secure else "Lax",
            partitioned=secure or None,
        )
        raise response

    def _reopened_in_its_session(self, request: web.Request, token: str) -> bool:
        """A link used already (or expired), opened again by a browser that is still signed in
        to the link's account: a reload or the back button, not an intruder."""
        session = self._signer.session(request.cookies.get(COOKIE))
        return session is not None and self._signer.link_account(token) == session.account_id

    def _session(self, request: web.Request) -> Session:
        session = self._signer.session(request.cookies.get(COOKIE))
        if session is None:
            raise _expired()
        return session

    async def _write_session(self, request: web.Request) -> tuple[Session, Any]:
        """The session of a form post, whose CSRF token must match."""
        session = self._session(request)
        form = await request.post()
        presented = form.get("csrf")
        if not csrf_matches(session, presented if isinstance(presented, str) else None):
            raise PortalError(
                403,
                "Request refused",
                "The form was missing its security token: reload the page and try again.",
            )
        return session, form

    def _endpoint(self, session: Session, request: web.Request) -> Endpoint:
        endpoint = self._deps.store.table.get(request.match_info["endpoint_id"])
        if endpoint is None or endpoint.account_id != session.account_id:
            raise _not_found()
        return endpoint

    def _page(
        self, request: web.Request, template: str, session: Session, **context: Any
    ) -> web.Response:
        notice = NOTICES.get(request.query.get("notice", ""))
        return aiohttp_jinja2.render_template(
            template,
            request,
            {"session": session, "notice": notice, "query": dict(request.query), **context},
        )

    # --- pages ----------------------------------------------------------------------------------

    async def endpoints(self, request: web.Request) -> web.Response:
        session = self._session(request)
        found = sorted(
            self._deps.store.table.for_account(session.account_id), key=lambda e: e.created_at
        )
        summaries = await asyncio.gather(*(self._deps.deliveries.summary(e.id) for e in found))
        return self._page(
            request, "endpoints.html", session, rows=list(zip(found, summaries, strict=True))
        )

    async def endpoint(self, request: web.Request) -> web.Response:
        session = self._session(request)
        endpoint = self._endpoint(session, request)
        stats = await self._deps.deliveries.endpoint_stats(endpoint.id)
        log = await self._log_page(endpoint, request.query)
        filters = {k: v for k, v in request.query.items() if k in LOG_FILTERS and v}
        return self._page(
            request,
            "endpoint.html",
            session,
            endpoint=endpoint,
            stats=stats,
            log=log,
            filters=filters,
            live=not request.query.get("cursor"),
        )

    async def log_rows(self, request: web.Request) -> web.Response:
        """The delivery log's rows alone, for the page's live refresh."""
        session = self._session(request)
        endpoint = self._endpoint(session, request)
        log = await self._log_page(endpoint, request.query)
        return self._page(request, "log_rows.html", session, endpoint=endpoint, log=log)

    async def _log_page(self, endpoint: Endpoint, query: Mapping[str, str]) -> Any:
        wanted = {k: v for k, v in query.items() if k in (*LOG_FILTERS, "cursor") and v}
        try:
            where = attempt_filter(wanted)
        except ApiError:
            where = attempt_filter({})
        return await self._deps.deliveries.attempt_page(endpoint.id, where, LOG_PAGE)

    async def attempt(self, request: web.Request) -> web.Response:
        session = self._session(request)
        endpoint = self._endpoint(session, request)
        found = await self._deps.deliveries.attempt_detail(
            endpoint.id, request.match_info["attempt_id"]
        )
        if found is None:
            raise PortalError(404, "Not found", "There is no such attempt in this log.")
        return self._page(request, "attempt.html", session, endpoint=endpoint, attempt=found)

    async def dead_letters(self, request: web.Request) -> web.Response:
        session = self._session(request)
        endpoint = self._endpoint(session, request)
        cursor = request.query.get("cursor")
        try:
            before = decode_cursor(cursor) if cursor else None
        except ApiError:
            before = None
        page = await self._deps.deliveries.dead_letter_page(endpoint.id, before, DEAD_LETTER_PAGE)
        jobs = self._deps.replays.jobs.of_endpoint(endpoint.id)
        replay = replay_status(jobs[-1]) if jobs else None
        template = "dead_letters_body.html" if request.query.get("part") else "dead_letters.html"
        return self._page(request, template, session, endpoint=endpoint, page=page, replay=replay)

    async def new_endpoint(self, request: web.Request) -> web.Response:
        session = self._session(request)
        return self._page(
            request, "endpoint_form.html", session, endpoint=None, values={}, errors=[]
        )

    async def edit_endpoint(self, request: web.Request) -> web.Response:
        session = self._session(request)
        endpoint = self._endpoint(session, request)
        return self._page(
            request, "endpoint_form.html", session, endpoint=endpoint, values={}, errors=[]
        )

    # --- writes ---------------------------------------------------------------------------------

    async def create_endpoint(self, request: web.Request) -> web.Response:
        session, form = await self._write_session(request)
        fields = form_fields(form, [str(s) for s in form.getall("signature_styles", [])])
        try:
            body = msgspec.convert(fields, EndpointCreate, strict=True)
            created, _ = await self._deps.endpoints.create_endpoint(_principal(session), body)
        except (msgspec.ValidationError, ApiError) as exc:
            return self._form_errors(request, session, None, form, exc)
        raise _redirect(f"endpoints/{created.id}", notice="created")

    async def update_endpoint(self, request: web.Request) -> web.Response:
        session, form = await self._write_session(request)
        endpoint = self._endpoint(session, request)
        fields = form_fields(form, [str(s) for s in form.getall("signature_styles", [])])
        try:
            body = msgspec.convert(fields, EndpointPatch, strict=True)
            await self._deps.endpoints.update_endpoint(
                _principal(session), endpoint.id, body, _version(form)
            )
        except (msgspec.ValidationError, ApiError) as exc:
            return self._form_errors(request, session, endpoint, form, exc)
        raise _redirect(f"endpoints/{endpoint.id}", notice="saved")

    def _form_errors(
        self,
        request: web.Request,
        session: Session,
        endpoint: Endpoint | None,
        form: Any,
        exc: msgspec.ValidationError | ApiError,
    ) -> web.Response:
        values: dict[str, Any] = {key: str(form.get(key, "")) for key in form}
        values["signature_styles"] = [str(s) for s in form.getall("signature_styles", [])]
        problems = refusal_lines(exc)
        response = self._page(
            request,
            "endpoint_form.html",
            session,
            endpoint=endpoint,
            values=values,
            errors=problems,
        )
        response.set_status(422)
        return response

    async def preview(self, request: web.Request) -> web.Response:
        """The edit page's live preview: the form's format and template on a sample click,
        as an HTML fragment (escaped by the template engine). Nothing is sent or saved."""
        session, form = await self._write_session(request)
        endpoint = self._endpoint(session, request)
        context: dict[str, Any] = {"problems": [], "preview": None}
        asked: dict[str, Any] = {"format": str(form.get("format", endpoint.format))}
        template = _template(form)
        if template is not None:
            asked["template"] = template
        try:
            body = msgspec.convert(asked, PreviewRequest, strict=True)
            context["preview"] = self._deps.endpoints.preview_endpoint(
                _principal(session), endpoint.id, body
            )
        except (ApiError, msgspec.ValidationError) as exc:
            context["problems"] = refusal_lines(exc)
        return aiohttp_jinja2.render_template("preview.html", request, context)

    async def set_enabled(self, request: web.Request) -> web.Response:
        session, form = await self._write_session(request)
        endpoint = self._endpoint(session, request)
        enable = request.match_info["action"] == "enable"
        await self._deps.endpoints.update_endpoint(
            _principal(session), endpoint.id, EndpointPatch(enabled=enable), _version(form)
        )
        raise _redirect(f"endpoints/{endpoint.id}", notice="enabled" if enable else "disabled")

    async def delete_endpoint(self, request: web.Request) -> web.Response:
        session, form = await self._write_session(request)
        endpoint = self._endpoint(session, request)
        await self._deps.endpoints.delete_endpoint(_principal(session), endpoint.id, _version(form))
        raise _redirect("", notice="deleted")

    async def reveal_secret(self, request: web.Request) -> web.Response:
        session, _ = await self._write_session(request)
        endpoint = self._endpoint(session, request)
        return self._page(request, "secret.html", session, endpoint=endpoint, rotated=None)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        session, form = await self._write_session(request)
        endpoint = self._endpoint(session, request)
        rotation = await self._deps.endpoints.rotate_endpoint_secret(
            _principal(session), endpoint.id, _version(form)
        )
        rotated = rotation.response()
        return self._page(request, "secret.html", session, endpoint=endpoint, rotated=rotated)

    async def send_test(self, request: web.Request) -> web.Response:
        session, _ = await self._write_session(request)
        endpoint = self._endpoint(session, request)
        sent = await self._deps.deliveries.send_test_event(endpoint)
        raise _redirect(f"endpoints/{endpoint.id}", notice="test_sent", sent=sent.event_id)

    async def replay(self, request: web.Request) -> web.Response:
        session, _ = await self._write_session(request)
        endpoint = self._endpoint(session, request)
        since = datetime.now(UTC) - REPLAY_WINDOW
        await self._deps.replays.start_job(endpoint, ReplayRequest(since=to_ms(since)))
        raise _redirect(f"endpoints/{endpoint.id}/dead-letters", notice="replay_started")

    # --- errors and headers -----------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except PortalError as exc:
            response = self._error_page(request, exc.status, Plain(exc.title, exc.message))
        except ApiError as exc:
            log.info("portal_refused", path=request.path, code=exc.code, detail=exc.message)
            response = self._error_page(request, exc.status, errors.for_code(exc.code))
            if "retry-after" in exc.headers:
                response.headers["retry-after"] = exc.headers["retry-after"]
        except DeliveryLogUnavailable as exc:
            log.info("portal_delivery_log_unavailable", path=request.path, reason=exc.reason)
            response = self._error_page(request, 503, errors.LOG_UNAVAILABLE)
            response.headers["retry-after"] = str(exc.retry_after_s)
        except web.HTTPException as exc:
            if exc.status < 400:
                exc.headers.update(self._headers)
                raise
            response = self._error_page(request, exc.status, errors.for_status(exc.status))
        except (KafkaError, TimeoutError) as exc:
            # A write that the broker did not acknowledge: nothing half done, a retry redoes it.
            log.warning("portal_broker_unavailable", path=request.path, error=repr(exc))
            response = self._error_page(request, 503, errors.NOT_SAVED)
            response.headers["retry-after"] = RETRY_AFTER_S
        except Exception:
            # Here and not in the API's middleware: a page, not JSON, and never the exception.
            log.exception("portal_request_failed", path=request.path)
            response = self._error_page(request, 500, errors.UNEXPECTED)
        response.headers.update(self._headers)
        return response

    def _error_page(self, request: web.Request, status: int, plain: Plain) -> web.Response:
        context = {"title": plain.title, "message": plain.message}
        response = aiohttp_jinja2.render_template(
            "error.html", request, {**context, "session": None, "notice": None, "query": {}}
        )
        response.set_status(status)
        return response


def refusal_lines(exc: msgspec.ValidationError | ApiError) -> list[str]:
    """A refused form as lines for the customer; what was refused, word for word, goes to the
    log only."""
    log.info("portal_form_refused", detail=str(exc))
    if isinstance(exc, msgspec.ValidationError):
        return [errors.field_hint(validation_problem(exc).field)]
    if exc.code == "invalid_request" and exc.details:  # our own checks of named fields
        return [errors.field_problem(d) for d in exc.details]
    return [errors.for_code(exc.code).message]


def _principal(session: Session) -> Principal:
    """A session acts as its account's token would: the same checks, the same scope."""
    return Principal(f"account:{session.account_id}")


def _version(form: Any) -> str | None:
    """The ``If-Match`` of a form: the ETag of the endpoint as the page showed it, so a change
    made meanwhile (elsewhere) is refused rather than overwritten."""
    version = form.get("version")
    return version if isinstance(version, str) and version else None


def _redirect(path: str, **query: str) -> web.HTTPSeeOther:
    suffix = f"?{urlencode(query)}" if query else ""
    return web.HTTPSeeOther(f"{PORTAL_PATH}{path}{suffix}")


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def add_portal(app: web.Application, deps: PortalDeps) -> None:
    """The portal as a sub-application at /portal/, and the route that opens it; without a
    usable key, no portal (only that route, answering why)."""
    try:
        key = portal_key(deps.settings)
    except PortalKeyError as exc:
        log.warning("portal_disabled", reason=exc.reason, fix=KEY_HINT)
        app.router.add_post(PORTAL_SESSION_PATH, _disabled(deps.auth))
        return
    portal = Portal(deps, key)
    sub = web.Application(middlewares=[portal.middleware])
    env = aiohttp_jinja2.setup(
        sub,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["failure"] = errors.failure
    env.globals["portal"] = PORTAL_PATH
    env.globals["etag"] = etag
    env.globals["mask"] = MASK  # custom header values are write-only: never in a page
    router = sub.router
    router.add_get("/", portal.endpoints)
    router.add_get("/open", portal.open)
    router.add_get("/endpoints/new", portal.new_endpoint)
    router.add_post("/endpoints", portal.create_endpoint)
    router.add_get("/endpoints/{endpoint_id}", portal.endpoint)
    router.add_post("/endpoints/{endpoint_id}", portal.update_endpoint)
    router.add_get("/endpoints/{endpoint_id}/edit", portal.edit_endpoint)
    router.add_get("/endpoints/{endpoint_id}/log", portal.log_rows)
    router.add_get("/endpoints/{endpoint_id}/attempts/{attempt_id}", portal.attempt)
    router.add_get("/endpoints/{endpoint_id}/dead-letters", portal.dead_letters)
    router.add_post("/endpoints/{endpoint_id}/{action:enable|disable}", portal.set_enabled)
    router.add_post("/endpoints/{endpoint_id}/delete", portal.delete_endpoint)
    router.add_post("/endpoints/{endpoint_id}/secret", portal.reveal_secret)
    router.add_post("/endpoints/{endpoint_id}/rotate-secret", portal.rotate_secret)
    router.add_post("/endpoints/{endpoint_id}/test", portal.send_test)
    router.add_post("/endpoints/{endpoint_id}/preview", portal.preview)
    router.add_post("/endpoints/{endpoint_id}/replay", portal.replay)
    router.add_static("/static/", HERE / "static", append_version=True)
    app.add_subapp(PORTAL_PATH, sub)
    app.router.add_post(PORTAL_SESSION_PATH, portal.create_session)


def _disabled(auth: Authenticator) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def portal_disabled(request: web.Request) -> web.Response:
        auth.authenticate(request)  # the same 401 as when the portal is on
        raise ApiError(
            503,
            "portal_disabled",
            "the customer portal is off: this deployment has no portal key"
            " (CLICKHOOK_PORTAL_KEY, at least 32 random bytes)",
        )

    return portal_disabled
