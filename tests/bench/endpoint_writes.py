"""Endpoint writes (issue 26): creates through one ingest's API from 1, 16 and 32 clients
(closed loop: each sends its next create when the last is answered), then one import of
``ENDPOINT_IMPORT_LINES`` endpoints in one request. Ingest alone, on its own prefix: the
writes go through the fenced writer's group commit (shared/kafka/fenced.py)."""

from __future__ import annotations

import time

import aiohttp
import orjson

from tests.bench.figures import ENDPOINT_IMPORT_LINES, ENDPOINT_WRITE_CLIENTS, percentile
from tests.bench.scenarios import CLOSED_LOOP_WARMUP_S, Bench
from tests.bench.stack import ADMIN_TOKEN, Stack, run_job
from tests.bench.wire import HttpLoad, HttpResult

ACCOUNT = "acc_bench_writes"
# Never delivered to (no dispatcher runs): any URL the API accepts.
CREATE_BODY = {"url": "https://hooks.example.com/in", "account_id": ACCOUNT}
IMPORT_TIMEOUT_S = 300


async def endpoint_writes(bench: Bench) -> None:
    async with bench.stack("ingest") as stack:
        for _ in range(bench.plan.repeats):
            for clients in ENDPOINT_WRITE_CLIENTS:
                await _creates(bench, stack, clients)
            await _import(bench, stack)


async def _creates(bench: Bench, stack: Stack, clients: int) -> None:
    job = HttpLoad(
        url=stack.url("ingest", "/v1/endpoints"),
        body=orjson.dumps(CREATE_BODY).decode(),
        token=ADMIN_TOKEN,
        concurrency=clients,
        duration_s=bench.plan.closed_loop_s,
        warmup_s=CLOSED_LOOP_WARMUP_S,
    )
    result = await run_job(job, HttpResult)
    prefix = f"endpoints.api.c{clients}"
    bench.record(f"{prefix}.cps", result.per_s)
    bench.record(f"{prefix}.p50", percentile(result.latencies_ms, 50))
    bench.record(f"{prefix}.p99", percentile(result.latencies_ms, 99))
    print(
        f"  endpoint creates, {clients} clients: {result.per_s:,.0f}/s, "
        f"p50 {percentile(result.latencies_ms, 50):.1f} ms, {result.failed} failed"
    )


async def _import(bench: Bench, stack: Stack) -> None:
    line = orjson.dumps({**CREATE_BODY, "description": "imported"})
    body = b"\n".join([line] * ENDPOINT_IMPORT_LINES) + b"\n"
    started = time.monotonic()
    async with bench.session.post(
        stack.url("ingest", "/v1/endpoints/import"),
        data=body,
        headers={
            "authorization": f"Bearer {ADMIN_TOKEN}",
            "content-type": "application/x-ndjson",
        },
        timeout=aiohttp.ClientTimeout(total=IMPORT_TIMEOUT_S),
    ) as response:
        answer = await response.read()
    seconds = time.monotonic() - started
    if response.status != 200:
        raise RuntimeError(f"the import failed: {response.status} {answer[:500]!r}")
    statuses = [orjson.loads(result)["status"] for result in answer.splitlines()]
    created = statuses.count(201)
    bench.record("endpoints.api.import.eps", created / seconds)
    bench.record("endpoints.api.import.failed", len(statuses) - created)
    print(f"  endpoint import: {created:,} of {ENDPOINT_IMPORT_LINES:,} in {seconds:.1f}s")
