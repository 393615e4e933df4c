"""The bench's outputs: a table on stdout, results.json, results.md and bench.png."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: the chart is only ever written to a file

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from tests.bench.figures import (
    HTTP_RATE,
    LATENESS_TIER_S,
    NEIGHBOUR_RATES,
    PERCENTILES,
    RATES,
    RETRY_SCHEDULE,
    SERVICES,
    Figure,
    bound,
    verdict,
)

COLUMNS = ("figure", "median", "min", "max", "unit", "target", "")
PERCENTILE_COLOURS = ("#4c72b0", "#55a868", "#dd8452", "#c44e52", "#8172b3")
THROUGHPUT_KEYS = (
    "receiver.rps",
    "ceiling.producer.eps",
    "ingest.single.rps",
    "ingest.batch.eps",
    "ceiling.sender.dps",
    "delivery.fan1.dps",
    "delivery.fan10.dps",
    "delivery.fan100.dps",
    "delivery.capped.dps",
    "retry.backlog.dps",
)
# Figures against targets relative to something measured in the same run.
RATIO_KEYS = (
    "delivery.fan1.ratio_to_ceiling",
    "ingest.batch.ratio_to_ceiling",
    "cpu.retry_vs_dispatcher",
    "cpu.retry_vs_dispatcher.backlog",
)


def number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def rows(figures: Sequence[Figure]) -> list[tuple[str, ...]]:
    by_key = {figure.spec.key: figure for figure in figures}
    table: list[tuple[str, ...]] = []
    for figure in figures:
        target = figure.spec.target
        limit = bound(target, by_key) if target is not None else None
        target_text = "" if target is None else target.describe()
        if target is not None and target.times_median_of is not None and limit is not None:
            target_text = f"{target.op} {number(limit)}"
        met = verdict(figure, by_key)
        table.append(
            (
                figure.spec.label,
                number(figure.median),
                number(figure.low),
                number(figure.high),
                figure.spec.unit,
                target_text,
                {True: "ok", False: "MISS", None: ""}[met],
            )
        )
    return table


def text_table(figures: Sequence[Figure]) -> str:
    body = rows(figures)
    widths = [max(len(row[i]) for row in [COLUMNS, *body]) for i in range(len(COLUMNS))]
    lines = []
    for row in [COLUMNS, *body]:
        cells = [
            cell.ljust(width) if i in (0, 4, 5) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def markdown_table(figures: Sequence[Figure]) -> str:
    header = "| figure | median | min | max | unit | target | |\n|---|--:|--:|--:|---|---|---|"
    body = ["| " + " | ".join(row) + " |" for row in rows(figures)]
    return "\n".join([header, *body])


def write_json(path: Path, meta: dict[str, Any], figures: Sequence[Figure]) -> None:
    by_key = {figure.spec.key: figure for figure in figures}
    entries = [
        {
            "key": figure.spec.key,
            "label": figure.spec.label,
            "unit": figure.spec.unit,
            "median": figure.median,
            "min": figure.low,
            "max": figure.high,
            "samples": list(figure.samples),
            "target": None if figure.spec.target is None else figure.spec.target.describe(),
            "meets_target": verdict(figure, by_key),
        }
        for figure in figures
    ]
    path.write_text(json.dumps({**meta, "figures": entries}, indent=2) + "\n")


# --- the chart ------------------------------------------------------------------------------


def draw_chart(path: Path, figures: Sequence[Figure], title: str) -> None:
    by_key = {figure.spec.key: figure for figure in figures}
    fig, axes = plt.subplots(3, 2, figsize=(16, 15))
    _ratio_panel(axes[0][0], by_key)
    _recovery_panel(axes[0][1], by_key)
    _latency_panel(axes[1][0], by_key)
    _throughput_panel(axes[1][1], by_key)
    _retry_panel(axes[2][0], by_key)
    _rss_panel(axes[2][1], by_key)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _percentile_bars(
    ax: Axes, by_key: dict[str, Figure], groups: Sequence[tuple[str, str]], *, log: bool
) -> None:
    """Bars of p50/p95/p99/max per group (label, key prefix); whiskers span min to max."""
    width = 0.8 / len(PERCENTILES)
    drawn = False
    for p_index, (name, _) in enumerate(PERCENTILES):
        xs, heights, low, high = [], [], [], []
        for g_index, (_, prefix) in enumerate(groups):
            figure = by_key.get(f"{prefix}.{name}")
            if figure is None:
                continue
            xs.append(g_index + (p_index - (len(PERCENTILES) - 1) / 2) * width)
            heights.append(figure.median)
            drawn = drawn or figure.median > 0
            low.append(figure.median - figure.low)
            high.append(figure.high - figure.median)
        label = "p99.9" if name == "p999" else name
        ax.bar(xs, heights, width, yerr=[low, high], capsize=2, label=label,
               color=PERCENTILE_COLOURS[p_index])  # fmt: skip
    ax.set_xticks(
        range(len(groups)), [_group_label(label, prefix, by_key) for label, prefix in groups]
    )
    if log and drawn:  # a log axis with nothing on it (a run of some scenarios) cannot scale
        ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)" if log else "ms")
    ax.grid(axis="y", which="both", alpha=0.3)


def _group_label(label: str, prefix: str, by_key: dict[str, Figure]) -> str:
    """A group whose deliveries did not all arrive says so: its percentiles flatter it."""
    missing = by_key.get(f"{prefix}.missing")
    if missing is None or missing.median == 0:
        return label
    return f"{label}\n({missing.median:.1f}% missing)"


def _latency_panel(ax: Axes, by_key: dict[str, Figure]) -> None:
    groups = [(f"{rate:,}/s", f"latency.{rate}") for rate in RATES]
    groups.append((f"{HTTP_RATE}/s\nvia API", f"latency.http{HTTP_RATE}"))
    groups.append(("500/s\n+1 hung", "isolation"))
    for rate in NEIGHBOUR_RATES:
        groups.append((f"{rate}/s\n3 fast", f"neighbour.{rate}.alone"))
        groups.append((f"{rate}/s 3 fast\n+1 stalled", f"neighbour.{rate}.stalled"))
    _percentile_bars(ax, by_key, groups, log=True)
    for limit, text in ((50, "p99 ≤ 50 ms at 500/s"), (250, "max ≤ 250 ms at 500/s")):
        ax.axhline(limit, color="black", linestyle="--", linewidth=1)
        ax.text(-0.4, limit * 1.08, f"target: {text}", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("Click occurred_at → receiver arrival (median of runs, whiskers min to max)")
    ax.legend(loc="upper left", fontsize=8, ncols=5)


def _retry_panel(ax: Axes, by_key: dict[str, Figure]) -> None:
    groups = [(f"{delay:g}s tier", f"retry.{delay:g}s") for delay in RETRY_SCHEDULE]
    groups.append((f"{LATENESS_TIER_S:g}s tier, written\nby the deliverer", "lateness.deferred"))
    _percentile_bars(ax, by_key, groups, log=False)
    ax.axhline(500, color="black", linestyle="--", linewidth=1)
    ax.text(-0.4, 510, "target: p99 ≤ 500 ms", fontsize=8)
    ax.set_title("Retry lateness: receiver arrival minus due time")
    ax.legend(loc="upper left", fontsize=8, ncols=5)


def _ratio_panel(ax: Axes, by_key: dict[str, Figure]) -> None:
    """Each ratio with its target: measured against a ceiling or figure of the same run."""
    shown = [by_key[key] for key in RATIO_KEYS if key in by_key]
    capped, backlog = by_key.get("delivery.capped.dps"), by_key.get("delivery.fan1.dps")
    rows = [(figure.spec.label, figure.median, figure.spec.target) for figure in shown]
    if capped is not None and backlog is not None:
        ratio = capped.median / backlog.median
        rows.insert(2, ("default caps / uncapped, one endpoint", ratio, capped.spec.target))
    ys = range(len(rows))
    ax.barh(ys, [value for _, value, _ in rows], color="#4c72b0")
    for y, (_, value, goal) in zip(ys, rows, strict=True):
        ax.text(value + 0.02, y, f"{value:.2f}", va="center", fontsize=9)
        if goal is not None:
            ax.plot([goal.value] * 2, [y - 0.4, y + 0.4], color="#c44e52", linewidth=2)
    ax.set_yticks(list(ys), [label for label, _, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ratio (red tick: target; CPU: lower is better)")
    ax.set_title("Ratios measured in one run, on one machine")
    ax.grid(axis="x", alpha=0.3)


def _recovery_panel(ax: Axes, by_key: dict[str, Figure]) -> None:
    groups = [("others before\nthe outage", "recovery.baseline"),
              ("others during\nthe drain", "recovery.others")]  # fmt: skip
    _percentile_bars(ax, by_key, groups, log=True)
    notes = [
        (key, text)
        for key, text in (
            ("recovery.backlog", "{:,.0f} deliveries waiting at recovery"),
            ("recovery.drain_s", "delivered {:.0f} s after recovery"),
            ("recovery.redeliveries_per_s", "at {:,.0f}/s"),
            ("recovery.max_in_flight", "at most {:.0f} at once at the endpoint"),
            ("recovery.early_attempts", "{:.0f} attempts before their due time"),
        )
        if key in by_key
    ]
    text = "\n".join(template.format(by_key[key].median) for key, template in notes)
    ax.text(0.98, 0.97, text, transform=ax.transAxes, ha="right", va="top", fontsize=9)
    ax.set_title("Recovery: 503 for a minute at 500 clicks/s, then the drain")
    ax.legend(loc="upper left", fontsize=8, ncols=5)


def _throughput_panel(ax: Axes, by_key: dict[str, Figure]) -> None:
    shown = [by_key[key] for key in THROUGHPUT_KEYS if key in by_key]
    ys = range(len(shown))
    medians = [figure.median for figure in shown]
    errors = [[f.median - f.low for f in shown], [f.high - f.median for f in shown]]
    ax.barh(ys, medians, xerr=errors, capsize=3, color="#4c72b0")
    for y, figure in zip(ys, shown, strict=True):
        ax.text(figure.high * 1.08, y, _throughput_note(figure, by_key), va="center", fontsize=8)
        target = figure.spec.target
        limit = bound(target, by_key) if target is not None else None
        if limit is not None:
            ax.plot([limit] * 2, [y - 0.4, y + 0.4], color="#c44e52", linewidth=2)
    ax.set_yticks(list(ys), [figure.spec.label for figure in shown])
    ax.invert_yaxis()
    if shown:
        ax.set_xscale("log")
        # Bars on a log axis start at its left edge: the decade below the smallest figure
        # keeps their lengths comparable.
        left = 10 ** math.floor(math.log10(min(f.low for f in shown)))
        ax.set_xlim(left, max(f.high for f in shown) * 6)
    ax.set_xlabel("per second (log scale); red tick: target")
    ax.set_title("Throughput (median of runs, whiskers min to max)")
    ax.grid(axis="x", which="both", alpha=0.3)


def _throughput_note(figure: Figure, by_key: dict[str, Figure]) -> str:
    note = f"{number(figure.median)} {figure.spec.unit}"
    deferred = by_key.get("delivery.capped.deferred")
    if figure.spec.key == "delivery.capped.dps" and deferred is not None:
        note += f", {deferred.median:.1f}% of the backlog deferred"
    return note


def _rss_panel(ax: Axes, by_key: dict[str, Figure]) -> None:
    shown = [(name, by_key[f"rss.{name}"]) for name in SERVICES if f"rss.{name}" in by_key]
    xs = range(len(shown))
    ax.bar(xs, [figure.high for _, figure in shown], color="#8172b3", label="worst run")
    ax.scatter(xs, [figure.median for _, figure in shown], color="black", zorder=3,
               label="median run")  # fmt: skip
    for x, (_, figure) in zip(xs, shown, strict=True):
        ax.text(x, figure.high + 3, f"{figure.high:.0f} MB", ha="center", fontsize=9)
    ax.axhline(150, color="black", linestyle="--", linewidth=1)
    ax.text(-0.4, 153, "target: ≤ 150 MB per service", fontsize=8)
    ax.set_xticks(list(xs), [name for name, _ in shown])
    ax.set_ylim(0, max([180.0, *(figure.high * 1.2 for _, figure in shown)]))
    ax.set_ylabel("MB")
    ax.set_title("Peak RSS per service (VmHWM)")
    ax.legend(loc="upper right", fontsize=8)
