"""``clickhook endpoints import FILE``: many endpoints at once, through ingest's API.

The file is NDJSON, one endpoint create body per line (what POST /v1/endpoints takes; blank
lines skipped). It goes to POST /v1/endpoints/import in parts well under the route's limits,
so every line is checked and answered exactly as a single create would be; each answer line
(with its line number in the file) goes to stdout or ``--results``: those of created endpoints
hold their secrets, shown nowhere else. A progress bar on stderr (on a terminal), a summary at
the end; exit status 1 when a line failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.cli.base import CliError
from shared.ops.settings import Settings

# Lines and bytes per request: under the route's limits (10,000 lines, 8 MiB), and small
# enough that the answer of each part streams back while the next one is read.
PART_LINES = 1000
PART_BYTES = 4 * 1024 * 1024
IMPORT_PATH = "/v1/endpoints/import"
REQUEST_TIMEOUT_S = 300
# Failed lines named in the summary; the results hold them all.
SUMMARY_FAILURES = 5


def parts(lines: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """Consecutive runs of the file's lines, each with the number of the line before it."""
    start, size = 0, 0
    for n, line in enumerate(lines):
        full = n - start >= PART_LINES or size + len(line) + 1 > PART_BYTES
        if full and n > start:
            yield start, lines[start:n]
            start, size = n, 0
        size += len(line) + 1
    if start < len(lines):
        yield start, lines[start:]


def admin_token(settings: Settings) -> str | None:
    """The deployment's first admin token (CLICKHOOK_API_KEYS), as operators run the CLI."""
    return next((key.token for key in settings.api_keys if key.scope == "admin"), None)


class Tally:
    """What came back: counts by status, the first failures, the time taken."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.started = time.monotonic()

    def add(self, result: dict[str, Any]) -> None:
        status = int(result["status"])
        self.statuses[status] += 1
        if status != 201 and len(self.failures) < SUMMARY_FAILURES:
            error = result["error"]
            self.failures.append(f"line {result['line']}: {status} {error['message']}")

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 201)

    def summary(self, lines: int) -> str:
        seconds = time.monotonic() - self.started
        created = self.statuses[201]
        text = f"{created:,} of {lines:,} endpoints created in {seconds:.1f}s"
        if seconds > 0:
            text += f" ({created / seconds:,.0f}/s)"
        if self.failed:
            text += f"; {self.failed:,} failed: " + "; ".join(self.failures)
            if self.failed > len(self.failures):
                text += "; … (all in the results)"
        return text


def progress_bar(total: int) -> Progress:
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("import"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    progress.add_task("import", total=total, failed=0)
    return progress


class Sink:
    """Where each answer line goes: the results, the tally, the progress bar."""

    def __init__(self, out: IO[bytes], progress: Progress) -> None:
        self.out = out
        self.progress = progress
        self.tally = Tally()

    def take(self, result: dict[str, Any]) -> None:
        self.tally.add(result)
        self.out.write(orjson.dumps(result) + b"\n")
        self.progress.update(self.progress.task_ids[0], advance=1, failed=self.tally.failed)


async def import_endpoints(settings: Settings, args: argparse.Namespace) -> None:
    lines = (await asyncio.to_thread(Path(args.file).read_bytes)).split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the newline that ends the last line
    total = sum(1 for line in lines if line.strip())
    token = args.token or admin_token(settings)
    if token is None:
        raise CliError("no token: pass --token, or set an admin token in CLICKHOOK_API_KEYS")
    url = (args.api or f"http://127.0.0.1:{settings.ingest_port}").rstrip("/") + IMPORT_PATH
    with ExitStack() as stack:
        out: IO[bytes] = sys.stdout.buffer
        if args.results:
            out = stack.enter_context(await asyncio.to_thread(Path(args.results).open, "wb"))
        sink = Sink(out, stack.enter_context(progress_bar(total)))
        try:
            await _send(url, token, lines, sink)
        except aiohttp.ClientError as exc:
            raise CliError(f"ingest at {url} did not answer: {exc}") from None
    print(sink.tally.summary(total), file=sys.stderr)
    if sink.tally.failed:
        raise CliError(f"{sink.tally.failed:,} of {total:,} lines failed (see the results)")


async def _send(url: str, token: str, lines: list[bytes], sink: Sink) -> None:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for before, part in parts(lines):
            async with session.post(url, data=b"\n".join(part), headers=headers) as response:
                if response.status != 200:
                    raise CliError(f"ingest refused the import: {await _error_of(response)}")
                async for raw in response.content:
                    result = orjson.loads(raw)
                    result["line"] += before  # its number in the file, not in the part
                    sink.take(result)
            sink.out.flush()


async def _error_of(response: aiohttp.ClientResponse) -> str:
    body = await response.read()
    try:
        error = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"{response.status} {body[:200].decode(errors='replace')}"
    return f"{response.status} {error['code']}: {error['message']}"


def add_command(verbs: Any) -> None:
    command = verbs.add_parser(
        "import",
        help="create many endpoints from an NDJSON file, through ingest's API",
        description="Each line of FILE is an endpoint create body (as POST /v1/endpoints "
        "takes), checked and answered as a single create would be. One result line per "
        "endpoint, with its line number, on stdout or in --results: created ones hold their "
        "secret (shown nowhere else). Exit status 1 when a line failed.",
    )
    command.add_argument("file", metavar="FILE", help="NDJSON, one endpoint per line")
    command.add_argument(
        "--api",
        metavar="URL",
        help="ingest's base URL (default: http://127.0.0.1:$CLICKHOOK_INGEST_PORT)",
    )
    command.add_argument(
        "--token",
        help="a bearer token (default: the first admin token of CLICKHOOK_API_KEYS); an "
        "admin token needs account_id on every line",
    )
    command.add_argument(
        "--results", metavar="PATH", help="write the result lines here instead of stdout"
    )
    command.set_defaults(run=import_endpoints)
