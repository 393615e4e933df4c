"""Debian's Prometheus binaries (deploy/local/prometheus.sh installs them; make test runs it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def prometheus_binary(name: str) -> Path:
    """``prometheus`` or ``promtool``; a failure, never a skip, when missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: run bash deploy/local/prometheus.sh (make test does)")
    return Path(found)
