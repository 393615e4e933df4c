"""``clickhook replay``: an endpoint's dead letters back into delivery, as a recorded job.

The job runs in this process (``shared.kafka.replay.run_replay``) and is kept in
``webhook.replays`` like one started through the API; a long one shows a progress bar on a
terminal. Ctrl-C cancels it (what was handed on stays handed on, and is not sent twice). It
claims the endpoint as the API does: while another replay of the endpoint runs, it refuses.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.cli.base import TIME_HELP, CliError, time_arg
from shared.cli.endpoints import endpoint_store, known
from shared.kafka.clients import create_producer
from shared.kafka.replay import ReplayRunning, run_replay
from shared.model.messages import ReplayJob
from shared.model.times import to_ms
from shared.ops.process import close_quietly
from shared.ops.settings import Settings


class ProgressBar:
    """Dead letters scanned out of those the job has to read, on stderr, only on a terminal."""

    def __init__(self) -> None:
        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[replayed]} replayed"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task = self._progress.add_task("replay", total=None, replayed=0)
        self._first: int | None = None

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def update(self, job: ReplayJob) -> None:
        if self._first is None:
            self._first = job.position
        self._progress.update(
            self._task,
            total=job.end_offset - self._first,
            completed=job.position - self._first,
            replayed=job.replayed,
        )


async def replay(settings: Settings, args: argparse.Namespace) -> None:
    until: datetime = args.until or datetime.now(UTC)
    if until <= args.since:
        raise CliError("--until must be after --since")
    async with endpoint_store(settings) as store:
        endpoint = known(store, args.endpoint)
    if not endpoint.enabled:
        raise CliError(
            f"{endpoint.id} is disabled: enable it first (clickhook endpoints enable {endpoint.id})"
        )
    producer = create_producer(settings)
    await producer.start()
    try:
        with ProgressBar() as bar:
            job = await run_replay(
                settings,
                producer,
                endpoint.id,
                endpoint.account_id,
                since_ms=to_ms(args.since),
                until_ms=to_ms(until),
                on_progress=bar.update,
            )
    except ReplayRunning as exc:
        raise CliError(_still_running(exc.running)) from exc
    finally:
        await close_quietly("producer", producer.stop())
    print(
        f"replay {job.id} of {endpoint.id}: {job.state}; {job.matched} dead letters in the "
        f"window, {job.replayed} replayed, {job.already_replayed} already replayed"
    )
    if job.state != "completed":
        raise CliError(f"replay {job.id} {job.state}" + (f": {job.error}" if job.error else ""))


def _still_running(job: ReplayJob) -> str:
    return (
        f"replay {job.id} of {job.endpoint_id} is still running ({job.owner or 'unknown'}: "
        f"{job.matched} dead letters matched, {job.replayed} replayed so far); wait for it "
        "or cancel it (DELETE /v1/endpoints/{id}/replay)"
    )


def add_commands(commands: Any) -> None:
    command = commands.add_parser(
        "replay",
        help="put an endpoint's dead letters of a window back into delivery",
        description="Replays the endpoint's open dead letters that died in [--since, --until): "
        "each goes to the first retry tier, due at once, with its webhook-id and history. "
        "Letters an earlier replay covered are skipped. The job is recorded in webhook.replays.",
    )
    command.add_argument("--endpoint", required=True, metavar="ID", help="endpoint id (ep_…)")
    command.add_argument(
        "--since",
        required=True,
        type=time_arg,
        metavar="TIME",
        help=f"died at or after: {TIME_HELP}",
    )
    command.add_argument(
        "--until", type=time_arg, metavar="TIME", help="died before TIME (default: now)"
    )
    command.set_defaults(run=replay)
