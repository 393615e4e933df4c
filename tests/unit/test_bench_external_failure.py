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
