"""What one broken endpoint costs the delivery log's index (issue 23): 10,000 dead letters,
each with 8 failed attempts that got a 1 KiB error page back, indexed into a fresh SQLite file
(no broker: the store alone). Prints the index's bytes on disk and per dead letter.

    python -m tests.bench.dead_letter_bytes [--letters 10000] [--attempts 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from services.ingest.delivery_log.store import Fetched, LogWriter
from shared.model.messages import encode
from shared.ops.settings import DELIVERY_LOG_MAX_BYTES
from tests.support.attempts import attempt, dead_letter, now_ms

ENDPOINT = "ep_broken"
ERROR_PAGE = ("<html><body><h1>502 Bad Gateway</h1>" + "x" * 1024)[:1024]
BATCH = 1000


def _letter(n: int, attempts: int, start_ms: int) -> bytes:
    event_id = f"evt_{n:08}"
    history = [
        attempt(ENDPOINT, event_id, at_ms=start_ms + n, attempt=k + 1, outcome="http_5xx",
                status=502, response_body=ERROR_PAGE)
        for k in range(attempts)
    ]  # fmt: skip
    return encode(dead_letter(ENDPOINT, event_id, history, dead_at_ms=start_ms + n))


def index_bytes(letters: int, attempts: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "index.sqlite3"
        writer = LogWriter(path, per_endpoint=letters, max_bytes=DELIVERY_LOG_MAX_BYTES)
        start_ms = now_ms() - 86_400_000
        for first in range(0, letters, BATCH):
            values = [_letter(n, attempts, start_ms) for n in range(first, first + BATCH)]
            writer.add_dead_letters([Fetched(0, first + i, v) for i, v in enumerate(values)])
        writer.close()  # checkpoints the WAL into the file
        return sum(p.stat().st_size for p in Path(directory).iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=10_000)
    parser.add_argument("--attempts", type=int, default=8)
    args = parser.parse_args()
    size = index_bytes(args.letters, args.attempts)
    print(f"{args.letters} dead letters x {args.attempts} attempts with 1 KiB bodies:")
    print(f"  index {size / 1e6:.1f} MB, {size / args.letters:.0f} bytes per dead letter")


if __name__ == "__main__":
    main()
