"""What every ``clickhook`` command shares: one-line errors, time arguments, output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import msgspec

from shared.model.errors import ClickhookError
from shared.model.times import parse_time

_json = msgspec.json.Encoder()


class CliError(ClickhookError):
    """A command that cannot do what was asked (an unknown id, an unreachable broker): one
    line on stderr, exit status 1."""

    exit_status = 1


class UsageError(CliError):
    """An argument no run could satisfy (a topic that does not exist): one line on stderr,
    exit status 2, as argparse's own refusals."""

    exit_status = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong and where the help is, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def verb_group(commands: Any, name: str, *, help: str, description: str, verbs: str) -> Any:
    """A command whose verbs (``dlq list``, ``dlq show``) are subcommands; one is required."""
    group = commands.add_parser(name, help=help, description=description)
    return group.add_subparsers(dest="verb", required=True, metavar="{" + verbs + "}")


def time_arg(text: str) -> datetime:
    """An argparse ``type``: any of the times the API takes too (``shared.model.times``)."""
    try:
        return parse_time(text, datetime.now(UTC))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


TIME_HELP = "an age (24h, 7d), RFC 3339 (2026-11-27T10:00:00Z), a date, unix ms, now, today"


def write_json_line(obj: Any) -> None:
    """One JSON value on one line of stdout (structs, datetimes and bytes as msgspec encodes)."""
    sys.stdout.buffer.write(_json.encode(obj) + b"\n")
    sys.stdout.flush()


def write_json(obj: Any) -> None:
    """One JSON value, indented for a reader."""
    sys.stdout.buffer.write(msgspec.json.format(_json.encode(obj), indent=2) + b"\n")
    sys.stdout.flush()


def write_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns as wide as their widest cell; the last column is not padded."""
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[col]) for row in cells) for col in range(len(headers))]
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        print("  ".join([*padded, row[-1]]).rstrip(), flush=False)
    sys.stdout.flush()
