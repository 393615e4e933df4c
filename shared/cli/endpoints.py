"""``clickhook endpoints list|show|disable|enable|import``: the registry, for operators.

Reads and writes go through the endpoint store (``shared.kafka.endpoint_store``), as the
services' own do; secrets are never shown. ``import`` goes through ingest's API instead
(``shared.cli.endpoint_import``): its checks of a create live there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.cli import endpoint_import
from shared.cli.base import CliError, verb_group, write_json, write_json_line, write_table
from shared.kafka.clients import create_producer
from shared.kafka.endpoint_store import EndpointStore
from shared.kafka.operational import OperationalWebhooks
from shared.model.messages import Endpoint
from shared.model.operational import switched_by_hand
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

OPERATOR_REASON = "disabled by an operator"


@contextlib.asynccontextmanager
async def endpoint_store(settings: Settings) -> AsyncIterator[EndpointStore]:
    """The store, read to the end of the topic and following it while the command runs."""
    # The store writes with producers of its own; this one is never started.
    producer = create_producer(settings)
    store = EndpointStore(settings)
    try:
        await store.start()
        follower = asyncio.create_task(store.follow(), name="endpoint-follower")
        try:
            loaded = asyncio.create_task(store.loaded.wait())
            await asyncio.wait({follower, loaded}, return_when=asyncio.FIRST_COMPLETED)
            loaded.cancel()
            if follower.done():
                follower.result()  # it failed before the table was read: say why
            yield store
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    finally:
        await store.stop()
        await close_quietly("producer", producer.stop())


def known(store: EndpointStore, endpoint_id: str) -> Endpoint:
    """The endpoint, or one line saying it does not exist."""
    endpoint = store.table.get(endpoint_id)
    if endpoint is None:
        raise CliError(f"no endpoint {endpoint_id} (clickhook endpoints list shows them)")
    return endpoint


async def list_endpoints(settings: Settings, args: argparse.Namespace) -> None:
    async with endpoint_store(settings) as store:
        found = store.table.for_account(args.account) if args.account else store.table.all()
    found.sort(key=lambda endpoint: endpoint.created_at)
    if args.json:
        for endpoint in found:
            write_json_line(endpoint.public_view())
        return
    rows = [
        [e.id, e.account_id, "enabled" if e.enabled else "disabled", e.format, e.url] for e in found
    ]
    write_table(["ID", "ACCOUNT", "STATE", "FORMAT", "URL"], rows)


async def show_endpoint(settings: Settings, args: argparse.Namespace) -> None:
    async with endpoint_store(settings) as store:
        write_json(known(store, args.id).public_view())


async def set_enabled(settings: Settings, args: argparse.Namespace) -> None:
    enable: bool = args.verb == "enable"
    reason: str | None = None if enable else args.reason

    switched = False

    def change(current: Endpoint) -> Endpoint | None:
        """Pure, so the store may apply it again to a newer version after a race."""
        nonlocal switched
        switched = current.enabled != enable
        if current.enabled == enable:
            return None
        return msgspec.structs.replace(
            current, enabled=enable, disabled_reason=reason, updated_at=datetime.now(UTC)
        )

    async with endpoint_store(settings) as store:
        before = known(store, args.id)
        after = await store.update(args.id, change)
    if after is None:
        raise CliError(f"no endpoint {args.id}: it was deleted meanwhile")
    if switched:
        await report_switch(settings, after)
    if before.enabled == enable:
        print(f"{args.id} is already {args.verb}d")
    else:
        print(f"{args.id} {args.verb}d")


async def report_switch(settings: Settings, endpoint: Endpoint) -> None:
    """Tell the operator's shortener, as the API does (when the command's environment sets
    CLICKHOOK_OPERATIONAL_WEBHOOK_URL)."""
    if not settings.operational_webhook_url:
        return
    event = switched_by_hand(endpoint)
    producer = create_producer(settings)
    await producer.start()
    try:
        await OperationalWebhooks(settings, producer).publish_within(
            event, settings.publish_timeout_s
        )
    finally:
        await close_quietly("producer", producer.stop())


def add_commands(commands: Any) -> None:
    verbs = verb_group(
        commands,
        "endpoints",
        help="the endpoint registry: list, show, disable, enable, import",
        description="Endpoints as stored in webhook.endpoints (secrets are never shown).",
        verbs="list,show,disable,enable,import",
    )
    listing = verbs.add_parser("list", help="one line per endpoint")
    listing.add_argument("--account", metavar="ID", help="only this account's (acc_…)")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    listing.set_defaults(run=list_endpoints)
    show = verbs.add_parser("show", help="one endpoint as JSON")
    show.add_argument("id", help="endpoint id (ep_…)")
    show.set_defaults(run=show_endpoint)
    disable = verbs.add_parser(
        "disable", help="stop deliveries to an endpoint (they go to the DLQ as endpoint_disabled)"
    )
    disable.add_argument("id", help="endpoint id (ep_…)")
    disable.add_argument(
        "--reason", default=OPERATOR_REASON, help=f"disabled_reason (default: {OPERATOR_REASON})"
    )
    disable.set_defaults(run=set_enabled)
    enable = verbs.add_parser("enable", help="deliver to an endpoint again; clears the reason")
    enable.add_argument("id", help="endpoint id (ep_…)")
    enable.set_defaults(run=set_enabled)
    endpoint_import.add_command(verbs)
