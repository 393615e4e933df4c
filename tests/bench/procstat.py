"""What a process has used so far, from /proc (Linux): peak RSS and CPU seconds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Usage:
    peak_rss_mb: float
    cpu_s: float


def usage(pid: int) -> Usage:
    return Usage(peak_rss_mb=_peak_rss_kb(pid) / 1024, cpu_s=_cpu_s(pid))


def _peak_rss_kb(pid: int) -> int:
    """VmHWM: the high-water mark of resident memory, kept by the kernel for us."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def _cpu_s(pid: int) -> float:
    # The command name (field 2) may hold spaces; utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def current_rss_mb(pid: int) -> float:
    """VmRSS: resident memory now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
