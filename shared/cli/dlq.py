"""``clickhook dlq list|show|count``: dead letters, with filters, replayed or open.

A dead letter is replayed when a replay job of its endpoint (``webhook.replays``) covers it
(``ReplayJob.covers``); otherwise it is open. Letters are streamed, never gathered: only the
replay jobs (one small record each) are held in memory.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from shared.cli.base import (
    TIME_HELP,
    CliError,
    time_arg,
    verb_group,
    write_json,
    write_json_line,
    write_table,
)
from shared.kafka.window import read_window
from shared.model.messages import AttemptRecord, DeadLetter, ReplayJob, decode_dead_letter
from shared.model.replays import ReplayBook
from shared.model.times import rfc3339_ms, to_ms, utc_label
from shared.model.topics import Topics
from shared.ops.settings import Settings

State = Literal["open", "replayed"]
STATES: tuple[State, ...] = ("open", "replayed")
REASONS = ("exhausted", "endpoint_gone", "endpoint_deleted", "endpoint_disabled", "endpoint_busy")


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter where it lies in ``webhook.dlq``, and whether a replay covered it."""

    partition: int
    offset: int
    letter: DeadLetter
    replayed_by: str | None

    @property
    def position(self) -> str:
        """Its id on the command line: ``<partition>:<offset>``."""
        return f"{self.partition}:{self.offset}"

    @property
    def state(self) -> State:
        return "open" if self.replayed_by is None else "replayed"

    def summary(self) -> dict[str, Any]:
        envelope = self.letter.envelope
        return {
            "position": self.position,
            "state": self.state,
            "replayed_by": self.replayed_by,
            "dead_at": rfc3339_ms(self.letter.dead_at_ms),
            "reason": self.letter.reason,
            "endpoint_id": envelope.endpoint_id,
            "account_id": envelope.account_id,
            "event_id": envelope.event_id,
            "webhook_id": envelope.webhook_id,
            "attempts": envelope.attempts_made,
        }


@dataclass(frozen=True, slots=True)
class Filters:
    since_ms: int
    until_ms: int | None
    endpoint: str | None
    account: str | None
    reason: str | None
    state: State | None

    @classmethod
    def of(cls, args: argparse.Namespace) -> Filters:
        return cls(
            since_ms=to_ms(args.since) if args.since else 0,
            until_ms=to_ms(args.until) if args.until else None,
            endpoint=args.endpoint,
            account=args.account,
            reason=args.reason,
            state=args.state,
        )

    def keeps(self, found: Letter) -> bool:
        letter, envelope = found.letter, found.letter.envelope
        return (
            letter.dead_at_ms >= self.since_ms
            and (self.until_ms is None or letter.dead_at_ms < self.until_ms)
            and self.endpoint in (None, envelope.endpoint_id)
            and self.account in (None, envelope.account_id)
            and self.reason in (None, letter.reason)
            and self.state in (None, found.state)
        )


async def replay_jobs(settings: Settings) -> list[ReplayJob]:
    """Every replay job's state, as every instance reads ``webhook.replays``."""
    book = ReplayBook()
    async for record in read_window(settings, Topics(settings.topic_prefix).replays, 0):
        if record.key is not None:
            # An unreadable record is not a job this version knows: it covers nothing here.
            book.apply(record.key.decode(errors="replace"), record.value, record.offset)
    return book.all()


async def dead_letters(settings: Settings, filters: Filters) -> AsyncIterator[Letter]:
    """The dead letters that pass ``filters``, in each partition's order; unreadable records
    are counted on stderr (``clickhook topics tail webhook.dlq`` shows them raw)."""
    jobs: dict[tuple[str, int], list[ReplayJob]] = {}
    for job in await replay_jobs(settings):
        jobs.setdefault((job.endpoint_id, job.dlq_partition), []).append(job)
    unreadable = 0
    dlq = Topics(settings.topic_prefix).dlq
    async for record in read_window(settings, dlq, filters.since_ms):
        try:
            letter = decode_dead_letter(record.value or b"")
        except msgspec.DecodeError:
            unreadable += 1
            continue
        covering = (
            job.id
            for job in jobs.get((letter.envelope.endpoint_id, record.partition), [])
            if job.covers(record.offset, letter.dead_at_ms)
        )
        found = Letter(record.partition, record.offset, letter, next(covering, None))
        if filters.keeps(found):
            yield found
    if unreadable:
        print(f"clickhook: {unreadable} unreadable record(s) in {dlq} skipped", file=sys.stderr)


async def list_letters(settings: Settings, args: argparse.Namespace) -> None:
    rows: list[list[object]] = []
    async for found in dead_letters(settings, Filters.of(args)):
        summary = found.summary()
        if args.json:
            write_json_line(summary)
        else:
            rows.append([summary[key] for key in LIST_COLUMNS])
    if not args.json:
        write_table([key.upper() for key in LIST_COLUMNS], rows)


LIST_COLUMNS = ("position", "dead_at", "endpoint_id", "account_id", "reason", "attempts", "state")


async def show_letter(settings: Settings, args: argparse.Namespace) -> None:
    """One dead letter in full: by position (``2:17``) or every letter of a webhook id; for a
    reader (UTC times, the attempts as a table) or, with ``--json``, as it is stored."""
    wanted: str = args.id
    shown = 0
    async for found in dead_letters(settings, Filters.of(args)):
        if wanted in (found.position, found.letter.envelope.webhook_id):
            if args.json:
                write_json({**found.summary(), "letter": found.letter})
            else:
                print_letter(found, first=shown == 0)
            shown += 1
    if not shown:
        raise CliError(
            f"no dead letter {wanted} (ids are positions like 0:17, or webhook ids; "
            "clickhook dlq list shows them)"
        )


ATTEMPT_COLUMNS = ("#", "AT (UTC)", "OUTCOME", "STATUS", "DURATION", "ERROR OR ANSWER")
ANSWER_CHARS = 60  # of a receiver's answer on a table row; --json has all that was kept


def print_letter(found: Letter, *, first: bool) -> None:
    """A dead letter for a reader: what it is, why it died, then one row per attempt."""
    letter, envelope = found.letter, found.letter.envelope
    state = f"replayed by {found.replayed_by}" if found.replayed_by else found.state
    if not first:
        print()
    print(f"dead letter {found.position} ({state})")
    for label, value in (
        ("webhook id", envelope.webhook_id),
        ("event", envelope.event_id),
        ("endpoint", f"{envelope.endpoint_id} (account {envelope.account_id})"),
        ("died", f"{utc_label(letter.dead_at_ms)}: {letter.reason}"),
        ("attempts", envelope.attempts_made),
    ):
        print(f"  {label:<11} {value}")
    print()
    write_table(ATTEMPT_COLUMNS, [attempt_row(attempt) for attempt in envelope.attempts])


def attempt_row(attempt: AttemptRecord) -> list[object]:
    said = attempt.error or attempt.response_body or ""
    said = " ".join(said.split())
    if len(said) > ANSWER_CHARS:
        said = said[: ANSWER_CHARS - 1] + "…"
    return [
        attempt.attempt,
        utc_label(attempt.at_ms).removesuffix(" UTC"),
        attempt.outcome,
        attempt.status if attempt.status is not None else "-",
        f"{attempt.duration_ms:.0f} ms",
        said or "-",
    ]


async def count_letters(settings: Settings, args: argparse.Namespace) -> None:
    counts: Counter[tuple[str, str, str, State]] = Counter()
    async for found in dead_letters(settings, Filters.of(args)):
        envelope = found.letter.envelope
        key = (envelope.endpoint_id, envelope.account_id, found.letter.reason, found.state)
        counts[key] += 1
    if args.json:
        for (endpoint_id, account_id, reason, state), count in sorted(counts.items()):
            write_json_line(
                {
                    "endpoint_id": endpoint_id,
                    "account_id": account_id,
                    "reason": reason,
                    "state": state,
                    "count": count,
                }
            )
        return
    groups: dict[tuple[str, str, str], Counter[State]] = {}
    for (endpoint_id, account_id, reason, state), count in counts.items():
        groups.setdefault((endpoint_id, account_id, reason), Counter())[state] += count
    rows: list[list[object]] = [
        [*group, by_state["open"], by_state["replayed"]]
        for group, by_state in sorted(groups.items())
    ]
    total = Counter[State]()
    for by_state in groups.values():
        total.update(by_state)
    rows.append(["total", "", "", total["open"], total["replayed"]])
    write_table(["ENDPOINT", "ACCOUNT", "REASON", "OPEN", "REPLAYED"], rows)


def add_commands(commands: Any) -> None:
    verbs = verb_group(
        commands,
        "dlq",
        help="dead letters: list, show, count (replayed or open)",
        description="Dead letters in webhook.dlq. A letter is replayed when a replay job of "
        "its endpoint covered it, open otherwise.",
        verbs="list,show,count",
    )
    listing = verbs.add_parser("list", help="one line per dead letter")
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    listing.set_defaults(run=list_letters)
    show = verbs.add_parser("show", help="one dead letter in full, with its attempts")
    show.add_argument("id", help="its position (0:17, from dlq list) or its webhook id")
    show.add_argument("--json", action="store_true", help="the letter as stored, as JSON")
    _filters(show)
    show.set_defaults(run=show_letter)
    count = verbs.add_parser("count", help="how many, by endpoint and reason, open and replayed")
    _filters(count)
    count.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    count.set_defaults(run=count_letters)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", metavar="ID", help="only this endpoint's (ep_…)")
    parser.add_argument("--account", metavar="ID", help="only this account's (acc_…)")
    parser.add_argument("--reason", choices=REASONS, help="only those dead for this reason")
    parser.add_argument("--state", choices=STATES, help="only open or only replayed ones")
    parser.add_argument(
        "--since", type=time_arg, metavar="TIME", help=f"died at or after: {TIME_HELP}"
    )
    parser.add_argument("--until", type=time_arg, metavar="TIME", help="died before TIME")
