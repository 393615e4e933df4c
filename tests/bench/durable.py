"""python -m tests.bench.durable [--quick] [--out FILE]: durable mode that is fast (issue 26).

A three-node cluster from deploy/local/kafka.sh: every topic with three replicas, two of them
in sync for a write to be acknowledged, every producer acks=all. The cluster runs twice: with
the brokers the tests use (``KAFKA_PROFILE=test``) and with a production deployment's
(``KAFKA_PROFILE=production``); on the latter, the services' default codec (zstd) and none.
First, the one-broker stack of ``make bench`` as the same run's reference (the machine is
shared: its light-load latency says how busy it was). For each variant, the three services on
a fresh prefix, warmed by a closed loop as long as the measured one, then (each setup's
brokers warmed first by 20 s of such a loop, so that the first variant does not pay alone
for their JIT compiling):

- click → receiver latency at 200 and 500 clicks/s, one click per request to ingest's API,
  and over each stream the CPU per click of the three services and of the three brokers;
- accepted/s: single-event requests from 64 keep-alive connections (closed loop), with
  ingest's CPU and the brokers' CPU per accepted event.

Prints a table and writes docs/benchmarks/durable.json (quick: docs/benchmarks/quick/).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import aiohttp
import msgspec
import uvloop

from shared.ops.logging import configure_logging
from tests.bench import machine, report, scenarios
from tests.bench.figures import DURABLE_RATES, figures
from tests.bench.procstat import usage
from tests.bench.produce import click_event
from tests.bench.scenarios import INGEST_CONNECTIONS, Bench, closed_loop, http_stream, warm_up
from tests.bench.stack import SERVICES, Broker, ReceiverProcess, Stack
from tests.support.broker import PrivateCluster

# Brokers (one node, or a cluster's profile) → the variants run on them: (figure key, the
# services' codec).
SETUPS = (
    ("one", (("one", "zstd"),)),
    ("test", (("test", "zstd"),)),
    ("production", (("production", "zstd"), ("production_none", "none"))),
)
MS_PER_S = 1000
# Fresh brokers' JITs compile their hot paths under the first load: measured, the production
# brokers' CPU per event was 1.2 ms in the first variant and 0.6 ms later. Every setup's
# brokers get this long a load first, so that no variant pays for it alone.
BROKER_WARMUP_S = 20.0


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    name: str
    repeats: int
    stream_s: float  # each latency stream; 200/s for 5 s is 1,000 clicks
    closed_loop_s: float


FULL = Plan("full", 3, stream_s=15, closed_loop_s=5)
# Two runs: on a shared 2-core machine one run of each says little.
QUICK = Plan("quick", 2, stream_s=5, closed_loop_s=3)


class Brokers(Protocol):
    def start(self) -> str: ...

    def stop(self) -> None: ...

    def node_pids(self) -> list[int]: ...


def bench_plan(plan: Plan) -> scenarios.Plan:
    """The one-broker bench's plan with this bench's stream and closed-loop lengths."""
    return dataclasses.replace(
        scenarios.QUICK, repeats=1, stream_s=plan.stream_s, closed_loop_s=plan.closed_loop_s
    )


def brokers_for(setup: str, log_dir: Path) -> tuple[Brokers, str]:
    """The brokers of a setup, and the topics' replication factor on them."""
    if setup == "one":
        return Broker(log_dir), "1"
    return PrivateCluster(log_dir / f"cluster-{setup}", profile=setup), "3"


def brokers_cpu_s(nodes: Brokers) -> float:
    return sum(usage(pid).cpu_s for pid in nodes.node_pids())


def services_cpu_s(stack: Stack) -> float:
    return sum(stack.usage(name).cpu_s for name in SERVICES)


async def warm_brokers(bench: Bench, replication: str) -> None:
    """A closed loop of BROKER_WARMUP_S through a stack of its own, nothing recorded."""
    plan = dataclasses.replace(bench.plan, closed_loop_s=BROKER_WARMUP_S)
    warm = Bench(plan, bench.bootstrap, bench.receiver, bench.session, bench.log_dir)
    env = {"CLICKHOOK_TOPIC_REPLICATION": replication}
    async with warm.stack(*SERVICES, **env) as stack:
        await closed_loop(warm, stack, single_click(), INGEST_CONNECTIONS)


async def variant(bench: Bench, nodes: Brokers, replication: str, key: str, codec: str) -> None:
    """One variant's streams, then its closed loop. The closed loops' clicks match no
    endpoint; the warm-up stream, on the same partition, arrives once the dispatcher has
    skipped past the first one's."""
    env = {"CLICKHOOK_TOPIC_REPLICATION": replication, "CLICKHOOK_KAFKA_COMPRESSION": codec}
    async with bench.stack(*SERVICES, **env) as stack:
        run = uuid.uuid4().hex[:6]
        groups = {rate: f"durable-{key}-{rate}-{run}" for rate in DURABLE_RATES}
        for group in groups.values():
            await stack.create_endpoint(bench.receiver.url(f"/ok/{group}/0"), f"acc_{group}")
        await closed_loop(bench, stack, single_click(), INGEST_CONNECTIONS)
        await warm_up(bench, stack)
        for rate, group in groups.items():
            await _stream(bench, nodes, stack, f"durable.{key}.http{rate}", group, rate)
        await _accepted(bench, nodes, stack, f"durable.{key}.ingest")


async def _stream(
    bench: Bench, nodes: Brokers, stack: Stack, prefix: str, group: str, rate: int
) -> None:
    services_before, brokers_before = services_cpu_s(stack), brokers_cpu_s(nodes)
    ledger = await http_stream(bench, stack, group, rate, bench.clicks(rate))
    bench.record_latencies(prefix, ledger, bench.clicks(rate))
    clicks = max(1, ledger.count)
    services_ms = (services_cpu_s(stack) - services_before) * MS_PER_S
    brokers_ms = (brokers_cpu_s(nodes) - brokers_before) * MS_PER_S
    bench.record(f"{prefix}.services_cpu_ms", services_ms / clicks)
    bench.record(f"{prefix}.broker_cpu_ms", brokers_ms / clicks)


def single_click() -> str:
    """A one-click request body; ingest assigns the id, as for a real shortener's request."""
    event = click_event("-", "acc_durable_ingest", "lnk_1")
    del event["id"]
    return msgspec.json.encode(event).decode()


async def _accepted(bench: Bench, nodes: Brokers, stack: Stack, prefix: str) -> None:
    brokers_before = brokers_cpu_s(nodes)
    result, ingest_cpu_s = await closed_loop(bench, stack, single_click(), INGEST_CONNECTIONS)
    events = max(1, result.ok_total)
    bench.record(f"{prefix}.rps", result.per_s)
    bench.record(f"{prefix}.cpu_ms", ingest_cpu_s * MS_PER_S / events)
    brokers_ms = (brokers_cpu_s(nodes) - brokers_before) * MS_PER_S
    bench.record(f"{prefix}.broker_cpu_ms", brokers_ms / events)


async def run_all(plan: Plan, log_dir: Path) -> dict[str, list[float]]:
    """Each setup's brokers in turn; on them, the variants in a rotating order per repeat."""
    receiver = ReceiverProcess(log_dir / "receiver.log")
    samples: dict[str, list[float]] = {}
    async with aiohttp.ClientSession() as session:
        receiver.start()
        try:
            await receiver.wait_ready(session)
            for setup, variants in SETUPS:
                nodes, replication = brokers_for(setup, log_dir)
                started = time.monotonic()
                bootstrap = nodes.start()
                print(f"{setup} brokers at {bootstrap} ({time.monotonic() - started:.0f}s)")
                bench = Bench(bench_plan(plan), bootstrap, receiver, session, log_dir, samples)
                try:
                    await warm_brokers(bench, replication)
                    for repeat in range(plan.repeats):
                        shift = repeat % len(variants)
                        for key, codec in variants[shift:] + variants[:shift]:
                            started = time.monotonic()
                            await variant(bench, nodes, replication, key, codec)
                            print(f"{key}: {time.monotonic() - started:.0f}s", flush=True)
                finally:
                    nodes.stop()
        finally:
            receiver.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.durable", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter streams, one run each")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    default_dir = Path("docs/benchmarks") / ("quick" if args.quick else "")
    out: Path = args.out or default_dir / "durable.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "bench": f"durable-{plan.name}",
        "started_at": datetime.now(UTC).isoformat(),
        **machine.describe(),
    }
    log_dir = Path(tempfile.mkdtemp(prefix="clickhook-durable-"))
    configure_logging("console", "warning")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    print(f"clickhook durable bench ({plan.name}); logs in {log_dir}")
    started = time.monotonic()
    samples = uvloop.run(run_all(plan, log_dir))
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["plan"] = dataclasses.asdict(plan)
    # Only this bench's figures: the stacks also record the services' RSS under rss.*.
    measured = figures({k: v for k, v in samples.items() if k.startswith("durable.")})
    print()
    print(report.text_table(measured))
    report.write_json(out, meta, measured)
    print(f"\n{meta['duration_s']:.0f}s; wrote {out}")


if __name__ == "__main__":
    main()
