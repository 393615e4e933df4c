"""python -m tests.bench [--quick] [--only NAME ...] [--out DIR]: run the scenarios, print the
table, write results.json, results.md and bench.png (and, in the full run, the scale,
delivery-log and durable benches' files, whose figures join results.json)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from tests.bench import (
    bytes_per_click,
    caps,
    codec_cpu,
    endpoint_writes,
    external,
    machine,
    recovery,
    report,
    scenarios,
    semantics,
    tracing,
)
from tests.bench.figures import Figure, figures
from tests.bench.scenarios import FULL, QUICK, Bench, Plan
from tests.bench.stack import Broker, ReceiverProcess

Scenario = Callable[[Bench], Awaitable[None]]
SCENARIOS: tuple[tuple[str, Scenario], ...] = (
    ("receiver alone", scenarios.receiver_alone),
    ("ingest", scenarios.ingest),
    ("deliveries", scenarios.deliveries),
    ("retry backlog", scenarios.retry_backlog),
    ("latency", scenarios.latency),
    ("retry timing", scenarios.retry_timing),
    ("deferred lateness", semantics.deferred_lateness),
    ("isolation", scenarios.isolation),
    ("stalled neighbour", scenarios.stalled_neighbour),
    ("recovery", recovery.recovery),
    ("caps", caps.caps),
    ("outage", semantics.outage_growth),
    ("replay", semantics.replay_memory),
    ("endpoint writes", endpoint_writes.endpoint_writes),
    ("bytes", bytes_per_click.bytes_per_click),
    ("tracing", tracing.tracing_cost),
    ("codec cpu", codec_cpu.codec_cpu),
)
EXTERNAL = ("scale", "delivery log", "durable")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short run of each scenario")
    parser.add_argument("--out", type=Path, default=None, help="where the results go")
    parser.add_argument(
        "--backlog",
        type=int,
        default=None,
        metavar="N",
        help="deliveries per drain of the deliveries scenario (quick: 2,000; full: 20,000)",
    )
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="runs of each")
    names = [name for name, _ in SCENARIOS] + list(EXTERNAL)
    parser.add_argument(
        "--only", nargs="+", choices=names, metavar="NAME", help=f"among: {', '.join(names)}"
    )
    return parser.parse_args()


async def run_scenarios(
    plan: Plan, log_dir: Path, chosen: list[tuple[str, Scenario]]
) -> dict[str, list[float]]:
    broker = Broker(log_dir)
    receiver = ReceiverProcess(log_dir / "receiver.log")
    try:
        started = time.monotonic()
        bootstrap = broker.start()
        print(f"broker at {bootstrap} ({time.monotonic() - started:.0f}s)", flush=True)
        async with aiohttp.ClientSession() as session:
            receiver.start()
            await receiver.wait_ready(session)
            bench = Bench(plan, bootstrap, receiver, session, log_dir)
            bench.broker_data_dir = broker.data_dir()
            for name, scenario in chosen:
                started = time.monotonic()
                await scenario(bench)
                print(f"{name}: {time.monotonic() - started:.0f}s", flush=True)
            return bench.samples
    finally:
        receiver.stop()
        broker.stop()


@dataclasses.dataclass
class ExternalFigures:
    """What the scale, delivery-log and durable benches gave, and which were not rerun."""

    scale: list[Figure] = dataclasses.field(default_factory=list)
    samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    carried: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)

    def take(self, name: str, out: Path, *, quick: bool, rerun: bool) -> None:
        if name == "scale":
            self.scale = (external.run_scale if rerun else external.read_scale)(out, quick=quick)
        elif name == "delivery log":
            self.samples.update(
                external.run_delivery_log(out, quick=quick)
                if rerun
                else external.read_delivery_log(out)
            )
        else:
            self.samples.update(
                external.run_durable(out, quick=quick) if rerun else external.read_durable(out)
            )


def run_external(plan: Plan, out: Path, only: list[str] | None) -> ExternalFigures:
    """The scale, delivery-log and durable benches, after ours (each starts its own broker or
    cluster).

    A run narrowed by --only carries the figures of the benches it leaves out from their files
    already in the output directory, so refreshing the short scenarios keeps results.md whole
    without the hours the delivery log at its cap takes. A bench that fails is carried the same
    way and named as failed, so the half hour of scenarios before it is never lost."""
    quick = plan.name == "quick"
    found = ExternalFigures()
    for name in EXTERNAL:
        wanted = (only is None and plan.external) or name in (only or ())
        files_there = all((out / file).exists() for file in external.files_of(name))
        if not wanted and not (only is not None and files_there):
            continue
        started = time.monotonic()
        try:
            found.take(name, out, quick=quick, rerun=wanted)
        except RuntimeError as error:
            found.failed.append(name)
            print(f"{name}: FAILED ({error})", flush=True)
            if not files_there:
                continue
            found.take(name, out, quick=quick, rerun=False)
        if wanted and name not in found.failed:
            print(f"{name}: {time.monotonic() - started:.0f}s", flush=True)
        else:
            found.carried.append(name)
            print(f"{name}: not rerun, figures carried from {', '.join(external.files_of(name))}")
    return found


def main() -> None:
    args = parse_args()
    plan = QUICK if args.quick else FULL
    if args.backlog is not None:
        plan = dataclasses.replace(plan, backlog_deliveries=args.backlog)
    if args.repeats is not None:
        plan = dataclasses.replace(plan, repeats=args.repeats)
    out: Path = args.out or Path("docs/benchmarks") / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    chosen = [(n, s) for n, s in SCENARIOS if args.only is None or n in args.only]
    meta = {"bench": plan.name, "started_at": datetime.now(UTC).isoformat(), **machine.describe()}
    log_dir = Path(tempfile.mkdtemp(prefix="clickhook-bench-"))
    print(f"clickhook bench ({plan.name}, {plan.repeats} run(s) each); logs in {log_dir}")
    started = time.monotonic()
    samples = asyncio.run(run_scenarios(plan, log_dir, chosen)) if chosen else {}
    found = run_external(plan, out, args.only)
    meta["carried"] = found.carried
    meta["failed"] = found.failed
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["plan"] = dataclasses.asdict(plan)
    measured = figures({**samples, **found.samples}) + found.scale
    print()
    print(report.text_table(measured))
    report.write_json(out / "results.json", meta, measured)
    (out / "results.md").write_text(
        report.markdown_table(measured) + "\n" + _carried_note(found.carried, found.failed)
    )
    sha = (meta["git"]["sha"] or "no git")[:10]
    title = f"clickhook bench ({plan.name}) at {sha}, {meta['started_at'][:16]} UTC"
    report.draw_chart(out / "bench.png", measured, title)
    print(f"\n{meta['duration_s']:.0f}s; wrote {out}/results.json, results.md, bench.png")
    if found.failed:
        raise SystemExit(f"failed: {', '.join(found.failed)} (see above)")


def _carried_note(carried: list[str], failed: list[str]) -> str:
    note = ""
    if carried:
        files = ", ".join(file for name in carried for file in external.files_of(name))
        names = ", ".join(carried)
        note += f"\nFigures of {names} carried from an earlier run of each ({files}).\n"
    if failed:
        names = ", ".join(failed)
        note += f"\nFailed in this run: {names}; the figures shown are an earlier run's.\n"
    return note


if __name__ == "__main__":
    main()
