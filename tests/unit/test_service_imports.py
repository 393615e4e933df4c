"""What a service loads when it starts: the optional features' libraries only when they are on.

Each is megabytes of every process (docs/performance-history.md, issue 26 follow-up): the
OpenTelemetry SDK (tracing on), Liquid (a template endpoint) and psycopg (the shared PostgreSQL
delivery log).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.services import ROOT

OPTIONAL = ("opentelemetry.sdk", "liquid", "psycopg")


@pytest.mark.parametrize("service", ["ingest", "dispatcher", "retry"])
def test_a_service_loads_no_optional_library_at_start(service: str) -> None:
    probe = (
        f"import sys, services.{service}.__main__; "
        f"print(' '.join(name for name in {OPTIONAL!r} if name in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == []
