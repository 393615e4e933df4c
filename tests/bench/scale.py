"""python -m tests.bench.scale [--quick] [--out FILE]: the figures past one machine (issue 18).

- workers: deliveries/s draining a backlog with one and with two dispatcher processes (a
  single-node broker, as ``make bench``). On two cores the point is correctness and what the
  second process costs, not a speed-up.
- endpoints: 100,000 endpoints over 1,000 accounts written straight to ``webhook.endpoints``;
  for each service the time from its start until /readyz (the table loaded) and its RSS; the
  dispatcher's CPU per click with that table and with a small one (1,000 endpoints), each click
  matching one of its account's 100 endpoints.
- cluster: a three-node cluster from deploy/local/kafka.sh: start and stop time, memory of each
  node idle and after a backlog drained through topics with three replicas.

Prints a table and writes docs/benchmarks/scale.json (quick: docs/benchmarks/quick/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import uvloop
from aiokafka import AIOKafkaProducer

from shared.kafka.clients import ensure_topics
from shared.model.messages import Endpoint, EndpointFilters, EndpointSecret, encode, encode_endpoint
from shared.model.signing import generate_secret
from shared.model.topics import DISPATCHER_GROUP, Topics
from shared.ops.logging import configure_logging
from shared.ops.settings import Settings, load_settings
from tests.bench import machine, report
from tests.bench.figures import Figure, Spec, Target
from tests.bench.procstat import usage
from tests.bench.produce import click_event
from tests.bench.stack import Broker, ReceiverProcess
from tests.support.broker import PrivateCluster, wait_group_stable
from tests.support.services import ServiceProcess, free_port, service_env

SERVICES = ("ingest", "dispatcher", "retry")
ACCOUNT_ENDPOINTS = 100  # endpoints per account, each wanting one link
PROBED_ACCOUNTS = 10  # the accounts the fan-out clicks are for
WORKERS = (1, 2)
WORKER_PARTITIONS = "6"  # two dispatchers get three partitions each
WORKER_LINKS = 600  # keys spread evenly over the partitions
UNCAPPED = {"CLICKHOOK_ENDPOINT_MAX_IN_FLIGHT": "1000"}
WAIT_S = 180.0
STALL_S = 10.0
KB_PER_MB = 1024
WRITE_LINGER_MS = 50
WRITE_BATCH_BYTES = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    name: str
    repeats: int
    endpoints: int  # the big table; the small one has PROBED_ACCOUNTS accounts' worth
    fanout_clicks: int
    backlog_clicks: int


FULL = Plan("full", 3, endpoints=100_000, fanout_clicks=5_000, backlog_clicks=20_000)
QUICK = Plan("quick", 1, endpoints=20_000, fanout_clicks=1_000, backlog_clicks=5_000)


def specs_for(plan: Plan) -> list[Spec]:
    """Every figure of the plan, in report order; targets on the big table (issue 18)."""
    load, rss = Target("<=", 10, on="max"), Target("<=", 200, on="max")
    specs = [
        Spec("workers.one.dps", "deliveries, 1 dispatcher process", "/s"),
        Spec("workers.two.dps", "deliveries, 2 dispatcher processes", "/s"),
        Spec("workers.two_vs_one", "  2 processes / 1 process", "x"),
        Spec("workers.one.cpu_per_1k", "dispatcher CPU / 1k deliveries, 1 process", "s"),
        Spec("workers.two.cpu_per_1k", "dispatcher CPU / 1k deliveries, 2 processes", "s"),
        Spec("endpoints.write.eps", "endpoints written to the topic", "/s"),
    ]
    for table in ("big", "small"):
        size = plan.endpoints if table == "big" else PROBED_ACCOUNTS * ACCOUNT_ENDPOINTS
        what = f"{size:,} endpoints"
        for name in SERVICES:
            big = table == "big"
            specs += [
                Spec(
                    f"endpoints.{table}.load_s.{name}",
                    f"{name}: start to ready, {what}",
                    "s",
                    load if big else None,
                ),
                Spec(
                    f"endpoints.{table}.rss.{name}",
                    f"{name}: peak RSS when ready, {what}",
                    "MB",
                    rss if big else None,
                ),
            ]
        specs += [
            Spec(f"endpoints.{table}.cpu_per_click_ms", f"dispatcher CPU / click, {what}", "ms"),
            Spec(
                f"endpoints.{table}.rss_after.dispatcher",
                f"dispatcher peak RSS, {what}, after the clicks",
                "MB",
            ),
        ]
    specs += [
        Spec("cluster.start_s", "3-node cluster: start (format, 3 JVMs, quorum)", "s"),
        Spec("cluster.node_rss", "3-node cluster: RSS per node, idle", "MB"),
        Spec("cluster.delivery.dps", "3-node cluster: deliveries, 1 dispatcher, RF 3", "/s"),
        Spec("cluster.node_peak_rss", "3-node cluster: peak RSS per node, after the drain", "MB"),
        Spec("cluster.stop_s", "3-node cluster: stop", "s"),
    ]
    return specs


@dataclasses.dataclass
class Run:
    """One bench run: its broker, receiver and samples; every service it starts."""

    plan: Plan
    bootstrap: str
    receiver: ReceiverProcess
    session: aiohttp.ClientSession
    log_dir: Path
    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    started: list[ServiceProcess] = dataclasses.field(default_factory=list)

    def record(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(round(value, 4))

    def settings(self, bootstrap: str | None = None, replication: int = 1) -> Settings:
        """A fresh prefix on ``bootstrap`` (the bench's broker by default)."""
        return load_settings(
            {
                "CLICKHOOK_KAFKA_BOOTSTRAP": bootstrap or self.bootstrap,
                "CLICKHOOK_TOPIC_PREFIX": f"scale{uuid.uuid4().hex[:8]}.",
                "CLICKHOOK_TOPIC_PARTITIONS": WORKER_PARTITIONS,
                "CLICKHOOK_TOPIC_REPLICATION": str(replication),
            }
        )

    def service(self, name: str, settings: Settings, **extra_env: str) -> ServiceProcess:
        """A service process on ``settings``' broker and prefix (not started)."""
        port = free_port()
        env = service_env(
            settings.kafka_bootstrap,
            settings.topic_prefix,
            CLICKHOOK_TOPIC_PARTITIONS=str(settings.topic_partitions),
            CLICKHOOK_TOPIC_REPLICATION=str(settings.topic_replication),
            CLICKHOOK_LOG_LEVEL="warning",  # logging every delivery would be measured too
            **{f"CLICKHOOK_{name.upper()}_PORT": str(port)},
            **extra_env,
        )
        log_path = self.log_dir / f"{settings.topic_prefix}{name}-{port}.log"
        process = ServiceProcess(name, env, port, log_path)
        self.started.append(process)
        return process

    async def stop_all(self) -> None:
        running = [p for p in self.started if p.process is not None and p.process.poll() is None]
        await asyncio.gather(*(asyncio.to_thread(p.terminate) for p in running))
        self.started.clear()

    async def arrivals(self, group: str, expected: int) -> tuple[int, float]:
        """Wait until ``expected`` arrived at ``group`` (or arrivals stall); how many did, and
        over how many seconds from the first to the last."""
        seen, seen_at = 0, time.monotonic()
        deadline = seen_at + WAIT_S
        while (now := time.monotonic()) < deadline:
            arrived = await self.receiver.count(self.session, group)
            if arrived >= expected:
                break
            if arrived != seen:
                seen, seen_at = arrived, now
            elif now - seen_at > STALL_S:
                break
            await asyncio.sleep(0.1)
        ledger = await self.receiver.ledger(self.session, group)
        if ledger.count < expected:
            print(f"  warning: {ledger.count} of {expected} arrived at {group}")
        return ledger.count, ledger.last_s - ledger.first_s


@contextlib.asynccontextmanager
async def producer_for(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """Large lingering batches: setting up a scenario should not take the bench's time."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=WRITE_LINGER_MS,
        max_batch_size=WRITE_BATCH_BYTES,
        max_request_size=WRITE_BATCH_BYTES * 2,
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def write_endpoints(settings: Settings, endpoints: Iterable[Endpoint]) -> int:
    """Straight to ``webhook.endpoints`` with the model's encoder, as the registry stores them."""
    topic = Topics(settings.topic_prefix).endpoints
    async with producer_for(settings.kafka_bootstrap) as producer:
        sent = [
            await producer.send(topic, key=e.id.encode(), value=encode_endpoint(e))
            for e in endpoints
        ]
        await asyncio.gather(*sent)
    return len(sent)


async def write_clicks(settings: Settings, clicks: list[tuple[str, str]]) -> None:
    """``(account id, link id)`` pairs as click events in ``clicks``, keyed by link."""
    topic = Topics(settings.topic_prefix).clicks
    run = uuid.uuid4().hex[:8]
    async with producer_for(settings.kafka_bootstrap) as producer:
        sent = [
            await producer.send(
                topic,
                key=link.encode(),
                value=encode(click_event(f"evt_{run}_{n}", account, link)),
            )
            for n, (account, link) in enumerate(clicks)
        ]
        await asyncio.gather(*sent)


def endpoint(endpoint_id: str, account: str, url: str, link: str | None = None) -> Endpoint:
    now = datetime.now(UTC)
    return Endpoint(
        id=endpoint_id,
        account_id=account,
        url=url,
        filters=EndpointFilters(link_ids=[link]) if link else EndpointFilters(),
        secrets=[EndpointSecret(generate_secret())],
        created_at=now,
        updated_at=now,
    )


async def start_timed(process: ServiceProcess) -> float:
    """Start a service; seconds until it answers ready."""
    started = time.monotonic()
    process.start()
    await process.wait_ready(timeout_s=WAIT_S)
    return time.monotonic() - started


# --- workers --------------------------------------------------------------------------------


async def workers(run: Run) -> None:
    """Alternating runs with one and two dispatcher processes, each on a fresh prefix."""
    rates: dict[int, list[float]] = {n: [] for n in WORKERS}
    for repeat in range(run.plan.repeats):
        for count in WORKERS:
            rate, cpu_per_1k = await _drain(run, count, f"w{count}-r{repeat}", run.settings())
            label = "one" if count == 1 else "two"
            run.record(f"workers.{label}.dps", rate)
            run.record(f"workers.{label}.cpu_per_1k", cpu_per_1k)
            rates[count].append(rate)
    run.record("workers.two_vs_one", statistics.median(rates[2]) / statistics.median(rates[1]))


async def _drain(run: Run, dispatchers: int, group: str, settings: Settings) -> tuple[float, float]:
    """Deliveries/s while ``dispatchers`` processes drain a backlog to one uncapped endpoint,
    and their CPU seconds per 1,000 deliveries."""
    await ensure_topics(settings)
    account, warm = f"acc_{group}", f"acc_{group}-warm"
    await write_endpoints(
        settings,
        [
            endpoint(f"ep_{group}", account, run.receiver.url(f"/ok/{group}/0")),
            endpoint(f"ep_{group}-warm", warm, run.receiver.url(f"/ok/{group}-warm/0")),
        ],
    )
    processes = [run.service("dispatcher", settings, **UNCAPPED) for _ in range(dispatchers)]
    for process in processes:
        process.start()
    await asyncio.gather(*(p.wait_ready(timeout_s=WAIT_S) for p in processes))
    # Every partition assigned and fetching before the clock starts.
    group_id = Topics(settings.topic_prefix).group(DISPATCHER_GROUP)
    await wait_group_stable(settings.kafka_bootstrap, group_id, members=dispatchers)
    await write_clicks(settings, [(warm, f"lnk_{n}") for n in range(WORKER_LINKS)])
    await run.arrivals(f"{group}-warm", WORKER_LINKS)

    cpu_before = sum(_cpu_s(p) for p in processes)
    clicks = run.plan.backlog_clicks
    await write_clicks(settings, [(account, f"lnk_{n % WORKER_LINKS}") for n in range(clicks)])
    arrived, span_s = await run.arrivals(group, clicks)
    cpu_s = sum(_cpu_s(p) for p in processes) - cpu_before
    await run.stop_all()
    return arrived / span_s if span_s > 0 else 0.0, cpu_s / max(1, arrived) * 1000


def _cpu_s(process: ServiceProcess) -> float:
    assert process.process is not None
    return usage(process.process.pid).cpu_s


def _peak_rss_mb(process: ServiceProcess) -> float:
    assert process.process is not None
    return usage(process.process.pid).peak_rss_mb


# --- many endpoints -------------------------------------------------------------------------


async def endpoints(run: Run) -> None:
    small = PROBED_ACCOUNTS * ACCOUNT_ENDPOINTS
    for repeat in range(run.plan.repeats):
        for table, count in (("big", run.plan.endpoints), ("small", small)):
            await _endpoint_table(run, table, count, f"{table}-r{repeat}")


async def _endpoint_table(run: Run, table: str, count: int, group: str) -> None:
    """Write ``count`` endpoints, start each service alone on them, then measure the
    dispatcher's CPU per click for the first PROBED_ACCOUNTS accounts."""
    settings = run.settings()
    await ensure_topics(settings)
    accounts = count // ACCOUNT_ENDPOINTS
    started = time.monotonic()
    written = await write_endpoints(
        settings,
        (
            endpoint(
                f"ep_{a}_{j}", f"acc_{a}", run.receiver.url(f"/ok/{group}/{a}-{j}"), f"lnk_{j}"
            )
            for a in range(accounts)
            for j in range(ACCOUNT_ENDPOINTS)
        ),
    )
    if table == "big":
        run.record("endpoints.write.eps", written / (time.monotonic() - started))

    # One at a time, so that each has the machine to itself; the dispatcher stays up, its
    # caps lifted: a click burst slower than the caps allow would be deferred to the retry
    # tier (no retry service runs here) and the figure would miss those clicks.
    for name in ("ingest", "retry", "dispatcher"):
        process = run.service(name, settings, **(UNCAPPED if name == "dispatcher" else {}))
        run.record(f"endpoints.{table}.load_s.{name}", await start_timed(process))
        run.record(f"endpoints.{table}.rss.{name}", _peak_rss_mb(process))
        if name != "dispatcher":
            await asyncio.to_thread(process.terminate)
    dispatcher = run.started[-1]

    probe = [(f"acc_{n % PROBED_ACCOUNTS}", f"lnk_{n % ACCOUNT_ENDPOINTS}") for n in range(100)]
    await write_clicks(settings, probe)  # warm: group joined, connections open
    await run.arrivals(group, len(probe))
    cpu_before = _cpu_s(dispatcher)
    clicks = run.plan.fanout_clicks
    await write_clicks(settings, (probe * (clicks // len(probe) + 1))[:clicks])
    arrived, _ = await run.arrivals(group, len(probe) + clicks)
    cpu_ms = (_cpu_s(dispatcher) - cpu_before) * 1000
    run.record(f"endpoints.{table}.cpu_per_click_ms", cpu_ms / max(1, arrived - len(probe)))
    run.record(f"endpoints.{table}.rss_after.dispatcher", _peak_rss_mb(dispatcher))
    await run.stop_all()


# --- the cluster ----------------------------------------------------------------------------


async def cluster(run: Run) -> None:
    """Start, memory and stop of the three-node cluster, and one backlog drained through it."""
    nodes = PrivateCluster(run.log_dir / "cluster")
    started = time.monotonic()
    bootstrap = await asyncio.to_thread(nodes.start)
    run.record("cluster.start_s", time.monotonic() - started)
    try:
        for pid in nodes.node_pids():
            run.record("cluster.node_rss", _rss_mb(pid))
        rate, _ = await _drain(run, 1, "cluster", run.settings(bootstrap, replication=3))
        run.record("cluster.delivery.dps", rate)
        for pid in nodes.node_pids():
            run.record("cluster.node_peak_rss", usage(pid).peak_rss_mb)
    finally:
        await run.stop_all()
        started = time.monotonic()
        await asyncio.to_thread(nodes.stop)
        run.record("cluster.stop_s", time.monotonic() - started)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / KB_PER_MB
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- running it -----------------------------------------------------------------------------


async def run_all(plan: Plan, log_dir: Path) -> dict[str, list[float]]:
    broker = Broker(log_dir)
    receiver = ReceiverProcess(log_dir / "receiver.log")
    try:
        bootstrap = broker.start()
        async with aiohttp.ClientSession() as session:
            receiver.start()
            await receiver.wait_ready(session)
            run = Run(plan, bootstrap, receiver, session, log_dir)
            try:
                for name, scenario in (
                    ("workers", workers),
                    ("endpoints", endpoints),
                    ("cluster", cluster),
                ):
                    started = time.monotonic()
                    await scenario(run)
                    print(f"{name}: {time.monotonic() - started:.0f}s", flush=True)
            finally:
                await run.stop_all()
            return run.samples
    finally:
        receiver.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one run each")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    out: Path = args.out or Path("docs/benchmarks") / ("quick" if args.quick else "") / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "bench": f"scale-{plan.name}",
        "started_at": datetime.now(UTC).isoformat(),
        **machine.describe(),
    }
    log_dir = Path(tempfile.mkdtemp(prefix="clickhook-scale-"))
    # The bench's own Kafka clients: a producer right after topic creation retries until the
    # leader is known, which is no news; the services' logs are in log_dir.
    configure_logging("console", "warning")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    print(f"clickhook scale bench ({plan.name}); logs in {log_dir}")
    started = time.monotonic()
    samples = uvloop.run(run_all(plan, log_dir))
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["plan"] = dataclasses.asdict(plan)
    measured = [
        Figure(spec, tuple(samples[spec.key])) for spec in specs_for(plan) if samples.get(spec.key)
    ]
    print()
    print(report.text_table(measured))
    report.write_json(out, meta, measured)
    print(f"\n{meta['duration_s']:.0f}s; wrote {out}")


if __name__ == "__main__":
    main()
