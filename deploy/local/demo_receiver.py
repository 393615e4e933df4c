"""A demo webhook receiver for `make up`: verifies each signature and prints the click.

Usage: DEMO_SECRET=whsec_... python deploy/local/demo_receiver.py PORT
"""

from __future__ import annotations

import os
import sys
import time

import orjson
from aiohttp import web

from shared.model.signing import verify


def make_app(secret: str) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        valid = verify(secret, dict(request.headers), body, now_s=time.time())
        data = orjson.loads(body).get("data", {}) if valid else {}
        link = data.get("link", {})
        click = data.get("click", {})
        print(
            f"[receiver] {'signature ok' if valid else 'BAD SIGNATURE'} "
            f"id={request.headers.get('webhook-id')} event={data.get('id')} "
            f"link={link.get('domain')}/{link.get('key')} country={click.get('country')}",
            flush=True,
        )
        return web.Response(status=200 if valid else 401)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(os.environ["DEMO_SECRET"]),
        port=int(sys.argv[1]),
        host="127.0.0.1",
        print=None,
        access_log=None,
    )
