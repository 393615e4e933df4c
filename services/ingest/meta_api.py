"""GET /v1/meta: what receivers need to know about this deployment, without a token (as
GitHub's ``/meta``): the address ranges webhooks come from, how they are signed, the retry
schedule, the version and the event types.

Everything in it is fixed at start (settings and code), so the body and its ``ETag`` are built
once; caches and receivers may keep it for ``META_MAX_AGE_S`` and revalidate with
``If-None-Match`` (304).
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version

import msgspec
from aiohttp import web

from services.ingest.api_types import RetrySchedule, ServiceMeta
from shared.model.messages import EVENT_TYPES
from shared.model.schedule import duration_label
from shared.model.signing import SIGNATURE_SCHEMES
from shared.ops.settings import Settings

META_PATH = "/v1/meta"
# Egress ranges change with a redeploy at most; five minutes of staleness is what an operator
# adding a range waits before receivers see it.
META_MAX_AGE_S = 300
PACKAGE = "clickhook"


def package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def service_meta(settings: Settings) -> ServiceMeta:
    delays = settings.retry_schedule_s
    return ServiceMeta(
        version=package_version(),
        egress_cidrs=[str(network) for network in settings.egress_cidrs],
        signature_schemes=list(SIGNATURE_SCHEMES),
        retry_schedule=RetrySchedule(
            delays_s=list(delays),
            written=",".join(duration_label(delay) for delay in delays),
            attempts=len(delays) + 1,
        ),
        event_types=list(EVENT_TYPES),
    )


def matches_any(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks) or is ``*``."""
    if if_none_match is None:
        return False
    tags = {item.strip().removeprefix("W/") for item in if_none_match.split(",")}
    return "*" in tags or etag in tags


class MetaRoute:
    def __init__(self, settings: Settings) -> None:
        self._body = msgspec.json.encode(service_meta(settings))
        self.etag = '"' + hashlib.sha256(self._body).hexdigest()[:32] + '"'
        self._headers = {"etag": self.etag, "cache-control": f"public, max-age={META_MAX_AGE_S}"}

    async def get(self, request: web.Request) -> web.Response:
        if matches_any(request.headers.get("if-none-match"), self.etag):
            return web.Response(status=304, headers=self._headers)
        return web.Response(body=self._body, content_type="application/json", headers=self._headers)


def add_meta_route(app: web.Application, settings: Settings) -> None:
    app.router.add_get(META_PATH, MetaRoute(settings).get)
