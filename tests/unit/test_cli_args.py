"""The ``clickhook`` command line without a broker: help everywhere, and a bad argument is one
line on stderr with exit status 2 (the commands themselves: tests/integration/test_cli.py)."""

from __future__ import annotations

import pytest

from shared.cli.main import parser

COMMANDS = [
    [],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "count"],
    ["replay"],
    ["topics"],
    ["topics", "tail"],
    ["topics", "create"],
    ["endpoints"],
    ["endpoints", "list"],
    ["endpoints", "show"],
    ["endpoints", "disable"],
    ["endpoints", "enable"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "clickhook")
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args([*command, "--help"])

    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {' '.join(['clickhook', *command])}")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["dlq", "list", "--since", "last tuesday"], "is not a time"),
        (["dlq", "list", "--since", "2026-11-27T10:00:00"], "has no UTC offset"),
        (["dlq", "count", "--reason", "tired"], "invalid choice"),
        (["replay", "--endpoint", "ep_1"], "required: --since"),
        (["replay", "--endpoint", "ep_1", "--since", "soon"], "is not a time"),
        (["topics", "tail", "clicks", "-n", "many"], "is not a number"),
        (["topics", "tail", "clicks", "--from-beginning", "--since", "1h"], "not allowed with"),
        (["dlq"], "required"),
        (["nothing"], "invalid choice"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_bad_argument_exits_2_with_one_line(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(args)

    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("\n") == 1, err
    assert says in err
    assert err.startswith("clickhook")
    assert err.rstrip().endswith("--help)")


def test_since_yesterday_is_accepted() -> None:
    """Once "invalid _utc value" (issue 17)."""
    args = parser().parse_args(["dlq", "list", "--since", "yesterday"])

    assert args.since.hour == 0
