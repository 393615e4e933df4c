"""JSON errors for the ingest API: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import msgspec
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from services.ingest.api_types import Error, ErrorDetail, ErrorInfo
from shared.model.errors import DeliveryLogUnavailable, InvalidInput, Problem
from shared.model.messages import decode_json, validation_problem
from shared.model.times import parse_time
from shared.ops import metrics

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[Problem] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = headers or {}

    def info(self) -> ErrorInfo:
        """The error object of the answer's body (also one line of an import's answer)."""
        details = [
            ErrorDetail(field=d.field, problem=d.problem, index=d.index) for d in self.details
        ]
        return ErrorInfo(code=self.code, message=self.message, details=details)

    def response(self) -> web.Response:
        return struct_response(Error(error=self.info()), status=self.status, headers=self.headers)


def struct_response(
    body: msgspec.Struct, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer encoded from one of ``api_types``' structs."""
    return web.Response(
        body=_encoder.encode(body), status=status, headers=headers, content_type="application/json"
    )


RETRY_AFTER_S = "5"


def broker_unavailable() -> ApiError:
    return ApiError(
        503,
        "broker_unavailable",
        "the broker did not acknowledge in time; retry the same request",
        headers={"retry-after": RETRY_AFTER_S},
    )


def delivery_log_unavailable(exc: DeliveryLogUnavailable) -> ApiError:
    """Only the delivery log's routes: clicks and endpoints never wait for it."""
    return ApiError(
        503,
        "delivery_log_unavailable",
        f"the delivery log is unavailable for now ({exc.reason}) and recovers by itself; "
        "retry later",
        headers={"retry-after": str(exc.retry_after_s)},
    )


def invalid(exc: InvalidInput, status: int = 422) -> ApiError:
    return ApiError(status, "invalid_request", exc.message, exc.problems)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@functools.lru_cache(maxsize=256)  # routes times statuses: a small, fixed set
def _requests_counter(route: str, status: int) -> Counter:
    return metrics.INGEST_REQUESTS.labels(route=route, status=str(status))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except DeliveryLogUnavailable as exc:
        response = delivery_log_unavailable(exc).response()
    except web.HTTPRequestEntityTooLarge:
        limit = f"the body is too large: at most {request.client_max_size:,} bytes"
        response = ApiError(413, "payload_too_large", limit).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = ApiError(exc.status, code, exc.reason).response()
    except (KafkaError, TimeoutError) as exc:
        # An endpoint write, a replay or a backfill could not reach the broker: nothing was
        # half done that a retry would not redo.
        log.warning("broker_unavailable", route=route, error=repr(exc))
        response = broker_unavailable().response()
    except Exception:
        log.exception("request_failed", route=route)
        response = ApiError(500, "internal", "internal error").response()
    _requests_counter(route, response.status).inc()
    return response


Body = TypeVar("Body", bound=msgspec.Struct)


async def read_json_body(request: web.Request, kind: type[Body], what: str) -> Body:
    """A JSON request body decoded into ``kind``: 415 for another media type, 422 listing what
    is wrong otherwise (``what`` names the request in the message)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    try:
        return msgspec.convert(decode_json(await request.read()), kind, strict=True)
    except InvalidInput as exc:
        raise invalid(exc) from None
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_request", what, [body_problem(exc)]) from None


def body_problem(exc: msgspec.ValidationError) -> Problem:
    """What a request struct refused, named by its field (``since``); ``body`` when the body
    as a whole is wrong (not an object)."""
    problem = validation_problem(exc)
    return problem if problem.field != "$" else Problem("body", problem.problem)


def parse_api_time(value: str | int, field: str, now: datetime) -> datetime:
    """A time a request gave (``24h``, RFC 3339, unix ms, …) in UTC; 422 naming ``field``."""
    try:
        return parse_time(value, now)
    except ValueError as exc:
        raise ApiError(
            422, "invalid_request", f"invalid {field}", [Problem(field, str(exc))]
        ) from None
