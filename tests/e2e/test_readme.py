"""README.md and the docs site, pasted as a reader would paste them: every shell and Python
block runs against a live stack (ingest, dispatcher and retry as processes, a loopback
receiver), the README first, then the pages of docs/ in the order of the site's navigation
(mkdocs.yml), each in the order it is written, all in one terminal; a command that stops
working fails the suite.

The convention (also on the docs' "Contributing" page):

- A fenced block tagged ``sh`` (or ``bash``, ``shell``) runs with ``bash -euo pipefail``; one
  tagged ``python`` runs as a script with the project's Python. Blocks run one after the other
  in one working directory, and the variables a shell block sets are kept for the next ones, as
  in one terminal. A block tagged ``text`` (or ``json``, ``yaml``, …) is shown, not run. A
  block with no tag fails this test: say which it is.
- Every block finds what ``make up`` prints for a reader to export: ``CLICKHOOK_API``,
  ``PUBLISH_TOKEN``, ``ACCOUNT_TOKEN`` (account ``acc_42``), ``ADMIN_TOKEN``,
  ``RECEIVER_URL`` (a receiver on loopback), ``DEMO_SECRET`` (a secret it verifies),
  ``CLICKHOOK_KAFKA_BOOTSTRAP``, and the quickstart's ``FAILING_ENDPOINT_ID`` at
  ``FAILING_URL`` (make up's own demo receiver, down until ``POST $FAILING_URL/fix``);
  ``clickhook`` and ``python3`` are on ``PATH``. Here the topics also have a prefix of their
  own (``CLICKHOOK_TOPIC_PREFIX``), and the retry schedule is short (``1s,2s``) so that the
  quickstart's dead letter comes within seconds.
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
import importlib.util
import itertools
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.model.signing import generate_secret
from tests.e2e.conftest import ACCOUNT_TOKEN, ADMIN_TOKEN, PUBLISH_TOKEN, Pipeline, StartPipeline
from tests.support.receiver import Receiver
from tests.support.services import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

README = ROOT / "README.md"
DEMO_RECEIVER = ROOT / "deploy" / "local" / "demo_receiver.py"
QUICK_SCHEDULE = "1s,2s"
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"
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
    source: str  # the file, relative to the repository: README.md, docs/guides/endpoints.md
    line: int  # where it starts in that file, 1-based
    tag: str
    code: str
    not_run: str | None  # why, when marked
    is_output: bool  # an expected output, introduced by <!-- output -->
    expected: str | None = None  # for a runnable block: the output block after it

    @property
    def runs(self) -> bool:
        return self.tag in SHELL | {"python"} and self.not_run is None

    def where(self) -> str:
        return f"{self.source}:{self.line} ({self.tag or 'untagged'})"


def nav_pages(nav: list[object]) -> list[str]:
    """The pages of a MkDocs ``nav``, in reading order (sections opened)."""
    pages: list[str] = []
    for entry in nav:
        targets = entry.values() if isinstance(entry, dict) else [entry]
        for target in targets:
            if isinstance(target, list):
                pages.extend(nav_pages(target))
            elif isinstance(target, str) and target.endswith(".md"):
                pages.append(target)
    return pages


def documents() -> list[Path]:
    """The README, then every page of the site in the navigation's order."""
    nav = yaml.safe_load(MKDOCS.read_text())["nav"]
    return [README, *(DOCS / page for page in nav_pages(nav))]


def readme_blocks(text: str, source: str = "README.md") -> list[Block]:
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
                source=source,
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


BLOCKS = [
    block
    for document in documents()
    for block in readme_blocks(document.read_text(), str(document.relative_to(ROOT)))
]


def test_the_site_navigation_lists_every_page_of_docs() -> None:
    """A page left out of the nav would be left out of this test too."""
    listed = {path.relative_to(DOCS) for path in documents()[1:]}
    pages = {path.relative_to(DOCS) for path in DOCS.rglob("*.md")}
    assert pages <= listed, f"add to mkdocs.yml's nav: {sorted(map(str, pages - listed))}"


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
            stem = block.source.replace("/", "_").removesuffix(".md")
            script = self.cwd / f"{stem}_{block.line}.py"
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
    # Every Python process of the stack refuses deliveries off loopback (see readme_guard). A
    # short schedule, and a breaker that does not open on the quickstart's failing endpoint
    # (every click of the README goes there too), so its dead letter comes within seconds.
    return await start_pipeline(
        PYTHONPATH=str(GUARD),
        CLICKHOOK_RETRY_SCHEDULE=QUICK_SCHEDULE,
        CLICKHOOK_BREAKER_THRESHOLD="100000",
    )


def load_demo_receiver() -> ModuleType:
    """deploy/local/demo_receiver.py is a script: loaded from its path."""
    spec = importlib.util.spec_from_file_location("demo_receiver", DEMO_RECEIVER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class FailingEndpoint:
    """make up's second demo endpoint: its receiver's /broken path, down until fixed."""

    endpoint_id: str
    url: str


@pytest.fixture(name="demo_secret")
def fixture_demo_secret() -> str:
    return generate_secret()


@pytest.fixture(name="failing")
async def fixture_failing(stack: Pipeline, demo_secret: str) -> AsyncIterator[FailingEndpoint]:
    """make up's demo receiver (the real one) and the endpoint at its /broken path."""
    app = load_demo_receiver().make_app(demo_secret, {})
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/broken"
    body = {"url": url, "secret": demo_secret, "description": "make up demo: down"}
    async with stack.session.post(
        f"{stack.ingest_url}/v1/endpoints",
        json=body,
        headers={"authorization": f"Bearer {ACCOUNT_TOKEN}"},
    ) as response:
        assert response.status == 201, await response.text()
        created = await response.json()
    yield FailingEndpoint(created["id"], url)
    await runner.cleanup()


async def test_every_block_of_the_readme_and_the_docs_runs_as_written(
    stack: Pipeline, receiver: Receiver, failing: FailingEndpoint, demo_secret: str, tmp_path: Path
) -> None:
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
        # clickhook replays into the first tier of its own settings' schedule: the services'.
        "CLICKHOOK_RETRY_SCHEDULE": QUICK_SCHEDULE,
        "FAILING_ENDPOINT_ID": failing.endpoint_id,
        "FAILING_URL": failing.url,
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
