"""The load generator process: reads one job (JSON) on stdin, runs it, prints its result.

Run by the bench as ``python -m tests.bench.loadgen``, so load generation never shares a
process, or an event loop, with the receiver or the services it measures.
"""

from __future__ import annotations

import sys

import msgspec
import uvloop

from tests.bench.httpload import run_http_load
from tests.bench.produce import produce_clicks, produce_envelopes
from tests.bench.wire import ClickLoad, HttpLoad, HttpResult, Job, ProduceResult


async def run_job(job: Job) -> HttpResult | ProduceResult:
    if isinstance(job, HttpLoad):
        return await run_http_load(job)
    if isinstance(job, ClickLoad):
        return await produce_clicks(job)
    return await produce_envelopes(job)


def main() -> None:
    job = msgspec.json.decode(sys.stdin.buffer.read(), type=Job)
    result = uvloop.run(run_job(job))
    sys.stdout.buffer.write(msgspec.json.encode(result))


if __name__ == "__main__":
    main()
