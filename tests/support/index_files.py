"""The delivery log's SQLite index as a test meets it: filled to its limit by another user of
the disk."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def fill_to_the_limit(path: Path, max_pages: int) -> None:
    """Take every page the index has left below ``max_pages`` (its budget), as another file
    on a full volume would."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(f"PRAGMA max_page_count={max_pages}")
    other.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
    with contextlib.suppress(sqlite3.OperationalError):
        while True:
            other.execute("INSERT INTO filler VALUES (zeroblob(1000))")
    other.close()
