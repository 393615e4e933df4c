"""The bench keeps its scenarios' figures when a bench it runs after them fails: the failed
bench's figures are carried from its last run, and results.md and the exit status say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench import __main__ as bench
from tests.bench import external
from tests.bench.scenarios import FULL


def fail(out_dir: Path, *, quick: bool) -> dict[str, list[float]]:
    raise RuntimeError("tests.bench.durable failed with exit status 1")


def test_a_failed_bench_is_carried_from_its_last_run_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(external, "run_durable", fail)
    last_run = {"figures": [{"key": "durable.accepted_per_s", "samples": [1143.0]}]}
    (tmp_path / external.DURABLE_FILE).write_text(json.dumps(last_run))

    found = bench.run_external(FULL, tmp_path, ["durable"])

    assert found.failed == ["durable"]
    assert found.carried == ["durable"]
    assert found.samples == {"durable.accepted_per_s": [1143.0]}
    note = bench._carried_note(found.carried, found.failed)
    assert "Failed in this run: durable" in note


def test_a_failed_bench_without_a_last_run_gives_no_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(external, "run_durable", fail)

    found = bench.run_external(FULL, tmp_path, ["durable"])

    assert found.failed == ["durable"]
    assert found.carried == []
    assert found.samples == {}
    assert "Failed in this run: durable" in bench._carried_note(found.carried, found.failed)


def test_a_delivery_log_bench_failing_at_the_cap_carries_both_files_of_its_last_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delivery log is two runs, its indexing then at the cap: the first one's file must
    not be replaced when the second fails, or the figures said to be the last run's mix both."""

    def run(module_and_args: list[str]) -> None:
        output = Path(module_and_args[module_and_args.index("--output") + 1])
        if "at-cap" in module_and_args:
            raise RuntimeError("tests.bench.delivery_log failed with exit status 1")
        output.write_text(json.dumps({"records": 2.0}))

    monkeypatch.setattr(external, "_run", run)
    (tmp_path / external.DELIVERY_LOG_FILE).write_text(json.dumps({"records": 1.0}))
    (tmp_path / external.CAP_FILE).write_text(json.dumps({"sqlite": {"index_mb": 10.0}}))

    found = bench.run_external(FULL, tmp_path, ["delivery log"])

    assert found.failed == ["delivery log"]
    assert found.carried == ["delivery log"]
    assert found.samples["delivery_log.records"] == [1.0]
    assert found.samples["delivery_log.sqlite.index_mb"] == [10.0]
