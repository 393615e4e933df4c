"""Where the figures were measured: machine, versions, commit. Read once per bench run."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.support.services import ROOT

PACKAGES = ("clickhook", "aiokafka", "aiohttp", "msgspec", "orjson", "uvloop", "structlog")


def describe() -> dict[str, Any]:
    return {"machine": _machine(), "versions": _versions(), "git": _git()}


def _machine() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    return {
        "platform": platform.platform(),
        "cpu": model.group(1) if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        # Others may share the machine: the load at the start tells how quiet it was.
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    pom = _read(str(ROOT / "deploy/local/pom.xml"))
    kafka = re.search(r"<kafka.version>(.+?)</kafka.version>", pom)
    versions["kafka"] = kafka.group(1) if kafka else None
    java = _run("java", "-version")  # prints to stderr; _run merges it
    versions["java"] = java.splitlines()[0] if java else None
    return versions


def _git() -> dict[str, Any]:
    return {
        "sha": _run("git", "rev-parse", "HEAD").strip() or None,
        # Figures from uncommitted code are not reproducible from the sha alone.
        "dirty": bool(_run("git", "status", "--porcelain", "--untracked-files=no").strip()),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _run(*command: str) -> str:
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
    except OSError:
        return ""
    return done.stdout + done.stderr
