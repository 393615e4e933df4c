"""Every figure the bench reports, with its unit and target, and the statistics over
repeats. Pure: no I/O."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

RATES = (100, 500, 1000)
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0))
RETRY_SCHEDULE = (2.0, 3.0)
SERVICES = ("ingest", "dispatcher", "retry")
FANOUTS = (1, 10, 100)


@dataclass(frozen=True, slots=True)
class Target:
    """``op value``, judged on the median (or the worst run for ``on="max"``). With
    ``times_median_of`` the bound is ``value`` times another figure's median."""

    op: Literal[">=", "<="]
    value: float
    on: Literal["median", "max"] = "median"
    times_median_of: str | None = None

    def describe(self) -> str:
        if self.times_median_of is not None:
            return f"{self.op} {self.value:g} x {self.times_median_of}"
        return f"{self.op} {self.value:,.0f}"


@dataclass(frozen=True, slots=True)
class Spec:
    key: str
    label: str
    unit: str
    target: Target | None = None


def _specs() -> list[Spec]:
    specs = [
        Spec("receiver.rps", "receiver alone, 32 connections", "req/s"),
        Spec("ingest.single.rps", "ingest, single-event requests", "req/s", Target(">=", 3000)),
        Spec("ingest.batch.eps", "ingest, batches of 100", "events/s", Target(">=", 20000)),
    ]
    for fanout in FANOUTS:
        label = "deliveries to 1 endpoint" if fanout == 1 else f"deliveries, fan-out to {fanout}"
        target = Target(">=", 3000) if fanout == 1 else None
        specs.append(Spec(f"delivery.fan{fanout}.dps", label, "/s", target))
    specs += [
        Spec("delivery.capped.dps", "deliveries to 1 endpoint, default cap", "/s"),
        Spec("delivery.capped.shunted", "  of which shunted to retry tier", "%"),
    ]
    for rate in RATES:
        p99 = Target("<=", 50) if rate == 500 else None
        specs += _latency_specs(f"latency.{rate}", f"latency {{}} at {rate} clicks/s", p99)
    for delay in RETRY_SCHEDULE:
        label = f"retry lateness {{}}, {delay:g}s tier"
        specs += _latency_specs(f"retry.{delay:g}s", label, Target("<=", 500))
    isolation = Target("<=", 2, times_median_of="latency.500.p99")
    specs += _latency_specs("isolation", "isolation: fast {}, 500/s + 1 hung", isolation)
    specs += [
        Spec(f"rss.{name}", f"peak RSS {name}", "MB", Target("<=", 150, on="max"))
        for name in SERVICES
    ]
    specs += [
        Spec("cpu.ingest.single", "ingest CPU / 1k events, single requests", "s"),
        Spec("cpu.ingest.batch", "ingest CPU / 1k events, batches of 100", "s"),
        Spec("cpu.dispatcher.fan1", "dispatcher CPU / 1k deliveries, backlog", "s"),
        Spec("cpu.dispatcher.fan100", "dispatcher CPU / 1k deliveries, fan-out 100", "s"),
        Spec("cpu.dispatcher.rate500", "dispatcher CPU / 1k deliveries, 500/s", "s"),
        Spec("cpu.retry", "retry CPU / 1k redeliveries", "s"),
    ]
    return specs


def _latency_specs(prefix: str, label: str, p99: Target | None) -> list[Spec]:
    """Percentiles (the p99 with its target), then the share that had not arrived when the
    bench stopped waiting."""
    specs = [
        Spec(f"{prefix}.{name}", label.format(name), "ms", p99 if name == "p99" else None)
        for name, _ in PERCENTILES
    ]
    specs.append(Spec(f"{prefix}.missing", label.format("missing"), "%"))
    return specs


SPECS = _specs()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Figure:
    spec: Spec
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


def figures(samples: dict[str, list[float]]) -> list[Figure]:
    """The figures that were measured, in report order."""
    return [Figure(spec, tuple(samples[spec.key])) for spec in SPECS if samples.get(spec.key)]


def bound(target: Target, by_key: dict[str, Figure]) -> float | None:
    """The target's number; None when it is relative to a figure that was not measured."""
    if target.times_median_of is None:
        return target.value
    reference = by_key.get(target.times_median_of)
    return None if reference is None else target.value * reference.median


def verdict(figure: Figure, by_key: dict[str, Figure]) -> bool | None:
    """True when the figure meets its target, None when it has none."""
    target = figure.spec.target
    if target is None:
        return None
    limit = bound(target, by_key)
    if limit is None:
        return None
    value = figure.high if target.on == "max" else figure.median
    return value >= limit if target.op == ">=" else value <= limit
