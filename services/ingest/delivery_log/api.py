"""The delivery log's routes: attempts, one attempt, an event's attempts, stats, dead letters,
and test events. Account-scoped like the endpoint routes: another account's endpoint or event
looks exactly like a missing one (404)."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.ingest.api_types import (
    Attempt,
    AttemptDetail,
    AttemptPage,
    DeadLetterPage,
    DeliverySummary,
    EndpointStats,
    SentTestEvent,
    WindowStats,
)
from services.ingest.auth import Authenticator, Principal, insufficient_scope
from services.ingest.clicks import new_event_ids
from services.ingest.delivery_log.log import DeliveryLog
from services.ingest.delivery_log.store import (
    ATTEMPT_ID_PREFIX,
    AttemptFilter,
    parse_record_id,
    position,
)
from services.ingest.endpoints_api import EndpointApi
from services.ingest.responses import ApiError, parse_api_time, struct_response
from shared.model.errors import DeliveryLogUnavailable, Problem
from shared.model.formats import TEST_LINK_ID, sample_click
from shared.model.messages import Endpoint, encode
from shared.model.signing import webhook_id
from shared.model.times import to_ms
from shared.model.topics import HEADER_ENDPOINT, Topics, endpoints_at_headers
from shared.ops.settings import Settings
from shared.ops.supervision import Supervisor

DEFAULT_PAGE = 50
MAX_PAGE = 250
# How many of a delivery's earlier records (attempts and deferrals at one endpoint) are looked
# through for the attempt whose record holds the request body a later one sent again: more
# than a whole retry schedule with its deferrals makes.
EARLIER_ATTEMPTS_SCANNED = 1000
STATUS = re.compile(r"success|failure|deferred|[1-5](xx|[0-9][0-9])")
# The app's delivery log, for what looks at it from outside the routes (tests hold its fill).
DELIVERY_LOG = web.AppKey("delivery_log", DeliveryLog)


def _problem(field: str, problem: str) -> ApiError:
    return ApiError(422, "invalid_request", f"invalid {field}", [Problem(field, problem)])


# --- query parameters -----------------------------------------------------------------------


def encode_cursor(at_ms: int, pos: int) -> str:
    return base64.urlsafe_b64encode(f"{at_ms}.{pos}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        at_ms, pos = (int(part) for part in raw.split("."))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _problem("cursor", "is not a cursor this API gave") from None
    return at_ms, pos


def _time_ms(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    return to_ms(parse_api_time(raw, name, datetime.now(UTC)))


def _status(query: Mapping[str, str]) -> str | None:
    raw = query.get("status")
    if raw is None:
        return None
    if STATUS.fullmatch(raw):
        return raw
    raise _problem("status", "is success, failure, deferred, a class such as 5xx, or a code")


def page_size(query: Mapping[str, str]) -> int:
    raw = query.get("limit", str(DEFAULT_PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise _problem("limit", f"is a number from 1 to {MAX_PAGE}")
    return int(raw)


def attempt_filter(query: Mapping[str, str]) -> AttemptFilter:
    cursor = query.get("cursor")
    return AttemptFilter(
        status=_status(query),
        since_ms=_time_ms(query, "since"),
        until_ms=_time_ms(query, "until"),
        event_id=query.get("event_id") or None,
        before=decode_cursor(cursor) if cursor else None,
    )


def _next_cursor(found: list[Attempt], limit: int) -> str | None:
    """A page one longer than asked says whether there is a next one."""
    if len(found) <= limit:
        return None
    last = found[limit - 1]
    parsed = parse_record_id(last.id, ATTEMPT_ID_PREFIX)
    assert parsed is not None  # ids come from the index
    return encode_cursor(int(last.at.timestamp() * 1000), position(*parsed))


class DeliveryLogApi:
    def __init__(
        self,
        settings: Settings,
        delivery_log: DeliveryLog,
        endpoints: EndpointApi,
        auth: Authenticator,
        producer: AIOKafkaProducer,
        *,
        supervisor: Supervisor,
    ) -> None:
        self._log = delivery_log
        self._endpoints = endpoints
        self._auth = auth
        self._producer = producer
        self._supervisor = supervisor
        self._clicks_topic = Topics(settings.topic_prefix).clicks

    @property
    def delivery_log(self) -> DeliveryLog:
        return self._log

    async def lifecycle(self, _: web.Application) -> AsyncIterator[None]:
        await self._log.start()
        self._supervisor.start("delivery_log", self._log.follow())
        try:
            yield
        finally:
            await self._supervisor.cancel("delivery_log")
            await self._log.stop()

    # --- reads --------------------------------------------------------------------------------

    async def attempts(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.owned(request)
        limit = page_size(request.query)
        page = await self.attempt_page(endpoint.id, attempt_filter(request.query), limit)
        return struct_response(page)

    async def attempt_page(self, endpoint_id: str, where: AttemptFilter, limit: int) -> AttemptPage:
        found = await self._log.read(self._log.reader.attempts, endpoint_id, where, limit + 1)
        return AttemptPage(
            data=found[:limit], next_cursor=_next_cursor(found, limit), index=self._log.status()
        )

    async def attempt(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.owned(request)
        found = await self.attempt_detail(endpoint.id, request.match_info["attempt_id"])
        if found is None:
            raise ApiError(404, "not_found", "no such attempt")
        return struct_response(found)

    async def attempt_detail(self, endpoint_id: str, attempt_id: str) -> AttemptDetail | None:
        """One attempt with the request it sent, read back from the topic."""
        parsed = parse_record_id(attempt_id, ATTEMPT_ID_PREFIX)
        if parsed is None:
            return None
        found = await self._log.read(self._log.reader.attempt, endpoint_id, position(*parsed))
        if found is None:
            return None
        record = await self._log.attempt_reader.read(*parsed)
        body = record.request_body if record is not None else None
        if record is not None and record.request_body_of is not None:
            body = await self._body_of(endpoint_id, found, record.request_body_of)
        fields = {name: getattr(found, name) for name in found.__struct_fields__}
        return AttemptDetail(
            **fields,
            request_headers=record.request_headers if record is not None else None,
            request_body=body,
            request_available=record is not None,
        )

    async def _body_of(self, endpoint_id: str, later: Attempt, number: int) -> str | None:
        """The request body of attempt ``number`` of ``later``'s delivery, which a later
        attempt of the same run sent again and so did not copy (None once it is gone)."""
        parsed = parse_record_id(later.id, ATTEMPT_ID_PREFIX)
        assert parsed is not None  # ids come from the index
        where = AttemptFilter(event_id=later.event_id, before=(to_ms(later.at), position(*parsed)))
        earlier = await self._log.read(
            self._log.reader.attempts, endpoint_id, where, EARLIER_ATTEMPTS_SCANNED
        )
        for attempt in earlier:
            if attempt.webhook_id == later.webhook_id and attempt.attempt == number:
                where_it_is = parse_record_id(attempt.id, ATTEMPT_ID_PREFIX)
                assert where_it_is is not None
                first = await self._log.attempt_reader.read(*where_it_is)
                return first.request_body if first is not None else None
        return None

    async def event_attempts(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        account = principal.account_id or request.query.get("account_id")
        cursor = request.query.get("cursor")
        limit = page_size(request.query)
        found = await self._log.read(
            self._log.reader.event_attempts,
            request.match_info["event_id"],
            account,
            decode_cursor(cursor) if cursor else None,
            limit + 1,
        )
        page = AttemptPage(
            data=found[:limit], next_cursor=_next_cursor(found, limit), index=self._log.status()
        )
        return struct_response(page)

    async def stats(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.owned(request)
        return struct_response(await self.endpoint_stats(endpoint.id))

    async def endpoint_stats(self, endpoint_id: str) -> EndpointStats:
        last_hour, last_day, now = await self._health(endpoint_id)
        return EndpointStats(
            endpoint_id=endpoint_id,
            last_hour=last_hour,
            last_24h=last_day,
            breaker=now.breaker,
            waiting=now.waiting,
            dead_letters_open=now.dead_letters_open,
            last_error=now.last_error,
            index=self._log.status(),
        )

    async def summary(self, endpoint_id: str) -> DeliverySummary | None:
        """The short health shown with the endpoint itself; None while the log is unavailable
        (the endpoint is shown without it)."""
        try:
            return (await self._health(endpoint_id))[2]
        except DeliveryLogUnavailable:
            return None

    async def _health(self, endpoint_id: str) -> tuple[WindowStats, WindowStats, DeliverySummary]:
        jobs = self._log.jobs_of(endpoint_id)
        now_ms = int(time.time() * 1000)
        return await self._log.read(self._log.reader.health, endpoint_id, jobs, now_ms)

    async def dead_letters(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.owned(request)
        cursor = request.query.get("cursor")
        page = await self.dead_letter_page(
            endpoint.id, decode_cursor(cursor) if cursor else None, page_size(request.query)
        )
        return struct_response(page)

    async def dead_letter_page(
        self, endpoint_id: str, before: tuple[int, int] | None, limit: int
    ) -> DeadLetterPage:
        jobs = self._log.jobs_of(endpoint_id)
        found = await self._log.read(
            self._log.reader.dead_letters, endpoint_id, jobs, before, limit + 1
        )
        next_cursor = encode_cursor(*found[limit - 1][1:]) if len(found) > limit else None
        return DeadLetterPage(
            data=[view for view, _, _ in found[:limit]],
            next_cursor=next_cursor,
            index=self._log.status(),
        )

    # --- test events --------------------------------------------------------------------------

    async def send_test(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.owned(request)
        return struct_response(await self.send_test_event(endpoint), status=202)

    async def send_test_event(self, endpoint: Endpoint) -> SentTestEvent:
        """A sample click through the real pipeline, to this endpoint only: on ``clicks`` with
        the ``clickhook-endpoint`` header, which makes the dispatcher skip every other."""
        if not endpoint.enabled:
            raise ApiError(409, "endpoint_disabled", "enable the endpoint to send it a test event")
        (event_id,) = new_event_ids(1)
        event = sample_click(endpoint, event_id, datetime.now(UTC))
        await self._producer.send_and_wait(
            self._clicks_topic,
            key=TEST_LINK_ID.encode(),
            value=encode(event),
            headers=[
                (HEADER_ENDPOINT, endpoint.id.encode()),
                *endpoints_at_headers(self._endpoints.stamp()),
            ],
        )
        return SentTestEvent(
            endpoint_id=endpoint.id, event_id=event_id, webhook_id=webhook_id(event_id, endpoint.id)
        )

    def _principal(self, request: web.Request) -> Principal:
        principal = self._auth.authenticate(request)
        if principal.account_id is None and not principal.is_admin:
            raise insufficient_scope("read deliveries")
        return principal


def add_delivery_log_routes(app: web.Application, api: DeliveryLogApi) -> None:
    """The routes, and the log's lifecycle: it follows the topics while the app runs."""
    app[DELIVERY_LOG] = api.delivery_log
    router = app.router
    router.add_get("/v1/endpoints/{endpoint_id}/attempts", api.attempts)
    router.add_get("/v1/endpoints/{endpoint_id}/attempts/{attempt_id}", api.attempt)
    router.add_get("/v1/events/{event_id}/attempts", api.event_attempts)
    router.add_get("/v1/endpoints/{endpoint_id}/stats", api.stats)
    router.add_get("/v1/endpoints/{endpoint_id}/dead-letters", api.dead_letters)
    router.add_post("/v1/endpoints/{endpoint_id}/test", api.send_test)
    app.cleanup_ctx.append(api.lifecycle)
