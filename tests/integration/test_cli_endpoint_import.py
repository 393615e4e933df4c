"""``clickhook endpoints import FILE`` as operators run it (a process), against an ingest
served in this test, on the real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from shared.cli.endpoint_import import PART_LINES
from shared.kafka.service_base import ServiceBase
from tests.integration.conftest import ACCOUNT_A
from tests.integration.test_cli import run_clickhook
from tests.support.services import service_env

pytestmark = pytest.mark.kafka

Client = TestClient[Any, Any]
GOOD = orjson.dumps({"url": "https://hooks.example.com/in"})
BAD = orjson.dumps({"url": "https://hooks.example.com/in", "filters": {"tag": ["x"]}})


async def test_a_file_over_several_parts_is_imported_with_file_line_numbers(
    ingest: Client, base: ServiceBase, kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    # Bad lines in the first part and in the second, and a blank one between.
    lines = [GOOD] * (PART_LINES + 5)
    lines[2], lines[PART_LINES + 2], lines[10] = BAD, BAD, b""
    path = tmp_path / "endpoints.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    api = f"http://127.0.0.1:{ingest.server.port}"

    run = await run_clickhook(
        service_env(kafka_bootstrap, prefix),
        *("endpoints", "import", str(path), "--api", api, "--token", ACCOUNT_A),
    )
    results = [orjson.loads(line) for line in run.out.splitlines()]

    assert run.code == 1, run.err
    failed = [r["line"] for r in results if r["status"] != 201]
    assert failed == [3, PART_LINES + 3]
    assert len(results) == len(lines) - 1
    assert [r["line"] for r in results] == [n for n in range(1, len(lines) + 1) if n != 11]
    created = [r for r in results if r["status"] == 201]
    assert all(base.endpoints.table.get(r["id"]) is not None for r in created)
    assert f"{len(created):,} of {len(lines) - 1:,} endpoints created" in run.err
    assert "line 3: 422" in run.err


async def test_an_import_without_a_token_says_so(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "endpoints.ndjson"
    path.write_bytes(GOOD + b"\n")
    env = {**service_env(kafka_bootstrap, prefix), "CLICKHOOK_API_KEYS": ""}

    run = await run_clickhook(env, "endpoints", "import", str(path))

    assert run.code == 1
    assert run.out == ""
    assert "no token" in run.err
