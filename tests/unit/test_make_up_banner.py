"""`make up`'s banner without starting anything: at most 80 columns in the widest case, and it
says what a first-time user needs (a full start: tests/e2e/test_make_up.py)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from shared.model.signing import generate_secret
from tests.support.services import ROOT


def load_up() -> ModuleType:
    """deploy/local/up.py is a script, not a package module: loaded from its path."""
    name = "clickhook_make_up"
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "local" / "up.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


up = load_up()
WIDEST_PORTS = {
    "KAFKA_PORT": "65535",
    "CLICKHOOK_INGEST_PORT": "65534",
    "CLICKHOOK_DISPATCHER_PORT": "65533",
    "CLICKHOOK_RETRY_PORT": "65532",
    "DEMO_RECEIVER_PORT": "65531",
}


def banner(monkeypatch: pytest.MonkeyPatch, data: Path | None) -> str:
    for name, value in WIDEST_PORTS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CLICKHOOK_RETRY_SCHEDULE", raising=False)
    # The demo endpoint's secret is one clickhook made (32 bytes), as its id is.
    state = up.State(up.Tokens.new(), "ep_" + "f" * 24, generate_secret())
    text: str = up.banner(up.plan_from(data, state.tokens), state)
    return text


@pytest.mark.parametrize("data", [None, Path("/home/someone/clickhook-data")])
def test_banner_fits_80_columns(monkeypatch: pytest.MonkeyPatch, data: Path | None) -> None:
    lines = banner(monkeypatch, data).splitlines()

    assert max(len(line) for line in lines) <= 80, "\n".join(lines)


def test_banner_says_tokens_are_new_and_state_is_deleted_at_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = " ".join(banner(monkeypatch, None).split())

    assert "tokens are new on every run" in text
    assert "deleted at exit" in text
    assert "make up DATA=~/clickhook-data" in text


def test_banner_shows_the_schedule_ports_logs_and_every_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = banner(monkeypatch, None)

    assert "after 5s, 30s, 2m, then webhook.dlq" in text
    for port in WIDEST_PORTS.values():
        assert port in text
    assert "run-65535/logs/server.log" in text
    for name in ("PUBLISH_TOKEN", "ACCOUNT_TOKEN", "ADMIN_TOKEN", "CLICKHOOK_API", "DEMO_SECRET"):
        assert f"export {name}=" in text


# Where the docs show make up's exports: (file, start of the section, end of it or None).
EXPORTS_SHOWN = [
    ("README.md", "## Quickstart", "**2. Register an endpoint**"),
    ("docs/index.md", "## Two commands", None),
]


@pytest.mark.parametrize(("path", "start", "end"), EXPORTS_SHOWN)
def test_banner_exports_what_the_docs_say_it_does(
    monkeypatch: pytest.MonkeyPatch, path: str, start: str, end: str | None
) -> None:
    """The examples rely on these variables (tests/e2e/test_readme.py sets the same)."""
    text = (ROOT / path).read_text()
    section = text[text.index(start) : text.index(end) if end else None]
    promised = set(re.findall(r"export (\w+)=", section))
    printed = set(re.findall(r"export (\w+)=", banner(monkeypatch, None)))

    assert promised == printed
    assert {"CLICKHOOK_API", "PUBLISH_TOKEN", "ACCOUNT_TOKEN", "ADMIN_TOKEN"} <= printed
