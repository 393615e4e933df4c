"""The other benches ``make bench`` runs, each as its own process with its own broker:
issue 18's scale-out figures (``python -m tests.bench.scale``: workers, endpoints, cluster),
issue 16's delivery log (``python -m tests.bench.delivery_log``) and issue 26's durable mode
on a three-node cluster (``python -m tests.bench.durable``). Their files are written
beside results.json as they would be alone; their figures join results.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bench.figures import Figure, figures
from tests.bench.scale import FULL as SCALE_FULL
from tests.bench.scale import QUICK as SCALE_QUICK
from tests.bench.scale import specs_for
from tests.support.services import ROOT

# The delivery log's figures, from its JSON: key in results.json → path in its file.
DELIVERY_LOG_KEYS = {
    "delivery_log.records": ("records",),
    "delivery_log.index_s": ("index_s",),
    "delivery_log.newest_hour_s": ("newest_hour_s",),
    "delivery_log.first_page_ms.p95": ("first_page_ms", "p95"),
    "delivery_log.first_page_ms_during_indexing.p95": ("first_page_ms_during_indexing", "p95"),
    "delivery_log.ingest_peak_rss_mb": ("ingest_peak_rss_mb",),
    "delivery_log.index_file_mb": ("index_file_mb",),
}
QUICK_DELIVERY_LOG = ["--records", "100000", "--endpoints", "100", "--requests", "200"]
# At the cap, on both stores (issue 23): key in results.json → path in delivery_log_cap.json,
# for each store.
CAP_STORES = ("sqlite", "postgres")
CAP_KEYS = {
    "index_mb": ("index_mb",),
    "index_records_per_s": ("index_records_per_s",),
    "newest_hour_s": ("newest_hour_s",),
    "restart_to_serving_s": ("restart_to_serving_s",),
    "new_replica_newest_hour_s": ("new_replica_newest_hour_s",),
    "first_page_ms.p95": ("first_page_ms", "p95"),
    "ingest_peak_rss_mb": ("ingest_peak_rss_mb",),
}
SCALE_FILE = "scale.json"
DELIVERY_LOG_FILE = "delivery_log.json"
CAP_FILE = "delivery_log_cap.json"
DURABLE_FILE = "durable.json"
# The full run is 1,000 endpoints at the cap (10 M attempts, 1 M dead letters): hours here.
QUICK_CAP = ["--scale", "0.005", "--requests", "200"]


def run_scale(out_dir: Path, *, quick: bool) -> list[Figure]:
    _run(["tests.bench.scale", "--out", str(out_dir / SCALE_FILE), *(["--quick"] if quick else [])])
    return read_scale(out_dir, quick=quick)


def read_scale(out_dir: Path, *, quick: bool) -> list[Figure]:
    entries = json.loads((out_dir / SCALE_FILE).read_text())["figures"]
    samples = {entry["key"]: entry["samples"] for entry in entries}
    return figures(samples, specs_for(SCALE_QUICK if quick else SCALE_FULL))


def run_delivery_log(out_dir: Path, *, quick: bool) -> dict[str, list[float]]:
    """Both runs write beside their files, which are replaced once both have succeeded: a
    failure at the cap leaves the last run's pair whole (a failed bench is carried from it)."""
    fresh = {name: out_dir / f"{name}.new" for name in (DELIVERY_LOG_FILE, CAP_FILE)}
    try:
        _run(
            ["tests.bench.delivery_log", "--output", str(fresh[DELIVERY_LOG_FILE])]
            + (QUICK_DELIVERY_LOG if quick else [])
        )
        _run(
            ["tests.bench.delivery_log", "at-cap", "--output", str(fresh[CAP_FILE])]
            + (QUICK_CAP if quick else [])
        )
        for name, path in fresh.items():
            path.replace(out_dir / name)
    finally:
        for path in fresh.values():
            path.unlink(missing_ok=True)
    return read_delivery_log(out_dir)


def read_delivery_log(out_dir: Path) -> dict[str, list[float]]:
    samples = _picked(json.loads((out_dir / DELIVERY_LOG_FILE).read_text()), DELIVERY_LOG_KEYS)
    cap = json.loads((out_dir / CAP_FILE).read_text())
    for store in CAP_STORES:
        keys = {f"delivery_log.{store}.{key}": path for key, path in CAP_KEYS.items()}
        samples.update(_picked(cap.get(store, {}), keys))
    return samples


def run_durable(out_dir: Path, *, quick: bool) -> dict[str, list[float]]:
    _run(
        ["tests.bench.durable", "--out", str(out_dir / DURABLE_FILE)]
        + (["--quick"] if quick else [])
    )
    return read_durable(out_dir)


def read_durable(out_dir: Path) -> dict[str, list[float]]:
    entries = json.loads((out_dir / DURABLE_FILE).read_text())["figures"]
    return {entry["key"]: entry["samples"] for entry in entries}


def files_of(name: str) -> tuple[str, ...]:
    """The files an external bench writes into the output directory, by its --only name."""
    return {
        "scale": (SCALE_FILE,),
        "delivery log": (DELIVERY_LOG_FILE, CAP_FILE),
        "durable": (DURABLE_FILE,),
    }[name]


def _picked(found: dict[str, Any], keys: dict[str, tuple[str, ...]]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    for key, path in keys.items():
        value: Any = found
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            samples[key] = [float(value)]
    return samples


def _run(module_and_args: list[str]) -> None:
    """Run a bench module; its output goes to ours as it comes."""
    done = subprocess.run([sys.executable, "-m", *module_and_args], cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module_and_args[0]} failed with exit status {done.returncode}")
