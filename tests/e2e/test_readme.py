"""README.md, pasted as a reader would paste it: every shell and Python block runs against a
live stack (ingest, dispatcher and retry as processes, a loopback receiver), in the order it
appears, and a command that stops working fails the suite.

The convention (also in the README's "Contributing" section):

- A fenced block tagged ``sh`` (or ``bash``, ``shell``) runs with ``bash -euo pipefail``; one
  tagged ``python`` runs as a script with the project's Python. Blocks run one after the other
  in one working directory, and the variables a shell block sets are kept for the next ones, as
  in one terminal. A block tagged ``text`` (or ``json``, ``yaml``, …) is shown, not run. A
  block with no tag fails this test: say which it is.
- Every block finds what ``make up`` prints for a reader to export: ``CLICKHOOK_API``,
  ``PUBLISH_TOKEN``, ``ACCOUNT_TOKEN`` (account ``acc_42``), ``ADMIN_TOKEN``,
  ``RECEIVER_URL`` (a receiver on loopback), ``DEMO_SECRET`` (a secret it verifies) and
  ``CLICKHOOK_KAFKA_BOOTSTRAP``; ``clickhook`` and ``python3`` are on ``PATH``. Here the
  topics also have a prefix of their own (``CLICKHOOK_TOPIC_PREFIX``).
- A block that cannot run here (kubectl, docker, kind, kcat, a third-party URL, a server
  that runs until stopped) says so on the line above it: ``<!-- not run: <why> -->``.
- ``<!-- output -->`` above a ``text`` block right after a runnable block makes it that
  block's expected output: compared with what the block printed, ``…`` standing for any text.
  A block without one fails when it prints an API error (``{"error": {"code": …}}``).
- Endpoints registered by a block point at ``$RECEIVER_URL``: deliveries to anything but
  loopback are refused in this test (tests/e2e/readme_guard), never sent.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.model.signing import generate_secret
from tests.e2e.conftest import ACCOUNT_TOKEN, ADMIN_TOKEN, PUBLISH_TOKEN, Pipeline, StartPipeline
from tests.support.receiver import Receiver
from tests.support.services import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

README = ROOT / "README.md"
GUARD = Path(__file__).with_name("readme_guard")
SHELL = {"sh", "bash", "shell"}
SHOWN = {"text", "json", "yaml", "console", "promql", "ini", "properties"}
BLOCK_TIMEOUT_S = 90
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<why>.+?)\s*-->")
OUTPUT = re.compile(r"<!--\s*output\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<tag>[\w+-]*)\s*$")
API_ERROR = re.compile(r'"error"\s*:\s*\{\s*"code"')


@dataclass
class Block:
    line: int  # where it starts in README.md, 1-based
    tag: str
    code: str
    not_run: str | None  # why, when marked
    is_output: bool  # an expected output, introduced by <!-- output -->
    expected: str | None = None  # for a runnable block: the output block after it

    @property
    def runs(self) -> bool:
        return self.tag in SHELL | {"python"} and self.not_run is None

    def where(self) -> str:
        return f"README.md:{self.line} ({self.tag or 'untagged'})"


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with the marker comment on the line above it, if any."""
    blocks: list[Block] = []
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if opening is None:
            number += 1
            continue
        indent = opening.group("indent")
        above = next((line for line in reversed(lines[:number]) if line.strip()), "")
        marker = NOT_RUN.search(above)
        body: list[str] = []
        number += 1
        while number < len(lines) and lines[number].strip() != "```":
            body.append(lines[number].removeprefix(indent))
            number += 1
        blocks.append(
            Block(
                line=number - len(body),
                tag=opening.group("tag"),
                code="\n".join(body) + "\n",
                not_run=marker.group("why") if marker else None,
                is_output=bool(OUTPUT.search(above)),
            )
        )
        number += 1
    for before, after in itertools.pairwise(blocks):
        if after.is_output and before.runs:
            before.expected = after.code
    return blocks


def matches(expected: str, printed: str) -> bool:
    """``…`` in the expected output stands for any text (line breaks included)."""
    parts = [re.escape(part) for part in expected.strip().split("…")]
    return re.fullmatch(".*?".join(parts), printed.strip(), re.DOTALL) is not None


# --- the checks that need no stack -----------------------------------------------------------


BLOCKS = readme_blocks(README.read_text())


def test_every_block_says_whether_it_runs() -> None:
    untagged = [block.where() for block in BLOCKS if not block.tag]
    assert not untagged, f"tag these ```sh (runs), ```python (runs) or ```text (shown): {untagged}"
    unknown = [block.where() for block in BLOCKS if block.tag not in SHELL | SHOWN | {"python"}]
    assert not unknown, f"a tag this test does not know: {unknown}"


def test_every_output_block_follows_a_block_that_runs() -> None:
    for before, after in itertools.pairwise(BLOCKS):
        if after.is_output:
            assert before.runs, f"{after.where()}: the output of a block that does not run"
            assert after.tag == "text", f"{after.where()}: tag an expected output ```text"


def test_the_readme_runs_some_blocks_and_marks_the_rest() -> None:
    runnable = [block for block in BLOCKS if block.tag in SHELL | {"python"}]
    assert sum(block.runs for block in runnable) >= 10
    for block in runnable:
        assert block.runs or block.not_run, block.where()


@pytest.mark.parametrize(
    ("expected", "printed", "same"),
    [
        ('{"accepted":1,"ids":["evt_…"]}', '{"accepted":1,"ids":["evt_1f2e"]}\n', True),
        ('{"accepted":1,"ids":["evt_…"]}', '{"accepted":2,"ids":["evt_1f2e"]}', False),
        ("a\n…\nz", "a\nb\nc\nz", True),
        ("exact", "exactly", False),
    ],
)
def test_expected_output_wildcards(expected: str, printed: str, same: bool) -> None:
    assert matches(expected, printed) is same


def test_the_guard_refuses_every_address_but_loopback_where_deliveries_connect() -> None:
    """The services of the README's stack check each address with the guarded policy."""
    check = (
        "import ipaddress\n"
        "from shared.delivery import http_client\n"
        "allowed = (ipaddress.ip_network('127.0.0.0/8'),)  # as the stack is configured\n"
        "for address in ('127.0.0.1', '93.184.215.14'):\n"
        "    print(http_client.refusal_reason(ipaddress.ip_address(address), allowed))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(GUARD)}
    printed = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()

    assert printed[0] == "None"  # loopback, allowed: delivered
    assert printed[1].startswith("not loopback")  # a public address: refused here


# --- the blocks, run -----------------------------------------------------------------------------


@dataclass
class Reader:
    """The reader's terminal: the exports of `make up`, a working directory, a shell state."""

    env: dict[str, str]
    cwd: Path
    state: Path
    baseline: set[str]

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        if block.tag == "python":
            script = self.cwd / f"readme_{block.line}.py"
            script.write_text(block.code)
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-c", self._shell(block.code)]
        return subprocess.run(
            command,
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            check=False,
        )

    def _shell(self, code: str) -> str:
        """The block between loading the variables earlier blocks set and saving its own."""
        keep = " ".join(sorted(self.baseline))
        return (
            "set -euo pipefail\n"
            f"source {self.state}\n"
            f"{code}\n"
            "for __readme_var in $(compgen -v); do\n"
            f'  case " {keep} __readme_var " in *" $__readme_var "*) continue ;; esac\n'
            '  declare -p "$__readme_var"\n'
            f"done | grep -v '^declare -[a-zA-Z]*r' > {self.state}.next || true\n"
            f"mv {self.state}.next {self.state}\n"
        )


def shell_variables(env: dict[str, str]) -> set[str]:
    """The variables bash has before any block ran: they are not the blocks' to carry."""
    names = subprocess.run(
        ["bash", "-c", "compgen -v"], env=env, capture_output=True, text=True, check=True
    )
    return set(names.stdout.split())


@pytest.fixture(name="stack")
async def fixture_stack(start_pipeline: StartPipeline) -> Pipeline:
    # Every Python process of the stack refuses deliveries off loopback (see readme_guard).
    return await start_pipeline(PYTHONPATH=str(GUARD))


async def test_every_block_of_the_readme_runs_as_written(
    stack: Pipeline, receiver: Receiver, tmp_path: Path
) -> None:
    demo_secret = generate_secret()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("CLICKHOOK_")},
        "CLICKHOOK_API": stack.ingest_url,
        "PUBLISH_TOKEN": PUBLISH_TOKEN,
        "ACCOUNT_TOKEN": ACCOUNT_TOKEN,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_URL": receiver.url("/webhooks"),
        "DEMO_SECRET": demo_secret,
        "CLICKHOOK_KAFKA_BOOTSTRAP": stack.bootstrap,
        "CLICKHOOK_TOPIC_PREFIX": stack.prefix,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(GUARD),
    }
    state = tmp_path / "shell-state.sh"
    state.write_text("")
    work = tmp_path / "reader"
    work.mkdir()
    reader = Reader(env, work, state, shell_variables(env))

    for block in BLOCKS:
        if not block.runs:
            continue
        ran = await asyncio.to_thread(reader.run, block)
        said = f"{block.where()} failed:\n{block.code}\n--- stdout\n{ran.stdout}\n--- stderr\n"
        said += ran.stderr + f"\n--- services\n{stack.logs()}"
        assert ran.returncode == 0, said
        if block.expected is not None:
            assert matches(block.expected, ran.stdout), f"expected:\n{block.expected}\n{said}"
        else:
            assert not API_ERROR.search(ran.stdout), f"an API error:\n{said}"

    # The clicks the README publishes reach its receiver, signed with the endpoint's secret.
    await receiver.wait_for(1, timeout_s=30)
    verified = 0
    for received in receiver.received:
        try:
            Webhook(demo_secret).verify(received.body, received.headers)
        except WebhookVerificationError:
            continue
        verified += 1
    assert verified, "no delivery verified with the secret the README registered"
