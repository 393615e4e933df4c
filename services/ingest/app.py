"""The ingest HTTP API: click intake and the endpoint registry (``create_app``)."""

from __future__ import annotations

from aiohttp import web

from services.ingest.auth import Authenticator
from services.ingest.backfill_api import BackfillApi
from services.ingest.clicks import ClickIntake
from services.ingest.delivery_log.api import DeliveryLogApi, add_delivery_log_routes
from services.ingest.delivery_log.log import DeliveryLog
from services.ingest.endpoint_import import EndpointImport
from services.ingest.endpoints_api import EndpointApi
from services.ingest.meta_api import add_meta_route
from services.ingest.openapi import openapi_document
from services.ingest.portal.views import PortalDeps, add_portal
from services.ingest.replay_api import ReplayApi
from services.ingest.responses import error_middleware
from shared.kafka.service_base import ServiceBase
from shared.ops import metrics
from shared.ops.health import add_ops_routes

# The app's replay jobs (tests look at what an instance has read through it).
REPLAYS = web.AppKey("replays", ReplayApi)


def create_app(base: ServiceBase, *, delivery_log: DeliveryLog | None = None) -> web.Application:
    """The ingest app on ``base``; ``delivery_log``: one built otherwise (tests shorten its
    timers), else the settings' own."""
    settings = base.settings
    auth = Authenticator(settings.api_keys)
    clicks = ClickIntake(settings, base.producer, auth, base.endpoints)
    endpoints = EndpointApi(settings, base.endpoints, auth, base.producer)
    backfills = BackfillApi(settings, endpoints, base.endpoints, base.producer)
    replays = ReplayApi(settings, endpoints, base.producer, base.supervisor)
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app.router.add_post(metrics.INGEST_CLICKS_ROUTE, clicks.post_clicks)
    app.router.add_post("/v1/endpoints", endpoints.create)
    app.router.add_post("/v1/endpoints/import", EndpointImport(endpoints).post)
    app.router.add_get("/v1/endpoints", endpoints.list)
    app.router.add_get("/v1/endpoints/{endpoint_id}", endpoints.get)
    app.router.add_patch("/v1/endpoints/{endpoint_id}", endpoints.patch)
    app.router.add_delete("/v1/endpoints/{endpoint_id}", endpoints.delete)
    app.router.add_post("/v1/endpoints/{endpoint_id}/rotate-secret", endpoints.rotate_secret)
    app.router.add_post("/v1/endpoints/{endpoint_id}/preview", endpoints.preview)
    app.router.add_post("/v1/endpoints/{endpoint_id}/replay", replays.start)
    app.router.add_get("/v1/endpoints/{endpoint_id}/replay", replays.status)
    app.router.add_delete("/v1/endpoints/{endpoint_id}/replay", replays.cancel)
    app.router.add_post("/v1/endpoints/{endpoint_id}/backfill", backfills.start)
    app.router.add_get("/v1/endpoints/{endpoint_id}/backfill", backfills.status)
    app.router.add_delete("/v1/endpoints/{endpoint_id}/backfill", backfills.cancel)
    app.on_cleanup.append(backfills.close)
    app.cleanup_ctx.append(replays.lifecycle)
    app[REPLAYS] = replays
    delivery_log_api = DeliveryLogApi(
        settings,
        delivery_log or DeliveryLog(settings),
        endpoints,
        auth,
        base.producer,
        supervisor=base.supervisor,
    )
    add_delivery_log_routes(app, delivery_log_api)
    endpoints.delivery_summary = delivery_log_api.summary
    add_portal(
        app, PortalDeps(settings, auth, base.endpoints, endpoints, delivery_log_api, replays)
    )
    document = openapi_document()

    async def serve_openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", serve_openapi)
    add_meta_route(app, settings)
    add_ops_routes(app, base.readiness)
    return app
