"""A demo webhook receiver for `make up`: verifies each signature and prints the click.

Usage: DEMO_SECRET=whsec_... DEMO_ENDPOINTS=/webhooks=ep_1,/broken=ep_2 \
       python deploy/local/demo_receiver.py PORT

Two paths, one per demo endpoint of `make up` (DEMO_ENDPOINTS names the endpoint at each, for
the lines it prints):

- ``/webhooks`` answers 200 to every signed delivery,
- ``/broken`` plays a receiver that is down: 503 until ``POST /broken/fix`` (the quickstart's
  "fix it" step), and again after ``POST /broken/break``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson
from aiohttp import web

from shared.model.signing import verify

BROKEN_PATH = "/broken"


def link_label(link: dict[str, Any]) -> str:
    """What a reader recognises of a link: its short form when known, else its id."""
    short = "/".join(part for part in (link.get("domain"), link.get("key")) if part)
    return short or str(link.get("id"))


def parse_endpoints(text: str) -> dict[str, str]:
    """``/webhooks=ep_1,/broken=ep_2`` → path → endpoint id."""
    pairs = (item.partition("=") for item in text.split(",") if "=" in item)
    return {path.strip(): endpoint.strip() for path, _, endpoint in pairs}


def make_app(secret: str, endpoints: dict[str, str]) -> web.Application:
    broken = {"down": True}

    def line(path: str, text: str) -> None:
        print(f"[receiver] {endpoints.get(path, path)} ({path}): {text}", flush=True)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        if path == BROKEN_PATH and broken["down"]:
            line(path, "answered 503: this receiver is down (fix: POST /broken/fix)")
            return web.Response(status=503, text="demo receiver: down until POST /broken/fix")
        valid = verify(secret, dict(request.headers), body, now_s=time.time())
        if not valid:
            line(path, f"BAD SIGNATURE id={request.headers.get('webhook-id')}")
            return web.Response(status=401)
        data = orjson.loads(body).get("data", {})
        country = (data.get("click") or {}).get("country")
        line(
            path,
            f"signature ok id={request.headers.get('webhook-id')} event={data.get('id')} "
            f"link={link_label(data.get('link') or {})} country={country}",
        )
        return web.Response(status=200)

    async def set_broken(request: web.Request) -> web.Response:
        broken["down"] = request.match_info["action"] == "break"
        state = "down (503)" if broken["down"] else "up again (200)"
        line(BROKEN_PATH, f"now {state}")
        return web.Response(text=f"{BROKEN_PATH} is {state}\n")

    app = web.Application()
    app.router.add_post(BROKEN_PATH + "/{action:fix|break}", set_broken)
    app.router.add_post("/{tail:.*}", receive)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(os.environ["DEMO_SECRET"], parse_endpoints(os.environ.get("DEMO_ENDPOINTS", ""))),
        port=int(sys.argv[1]),
        host="127.0.0.1",
        print=None,
        access_log=None,
    )
