"""Payload templates: the recipes' golden bodies, the json filter, and every limit.

Regenerate the golden bodies after an intended change with
``CLICKHOOK_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_templates.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from shared.delivery.sender import Sender
from shared.model import template_engine
from shared.model.errors import TemplateError
from shared.model.formats import build_request
from shared.model.messages import EndpointSecret
from shared.model.signing import generate_secret
from shared.model.templates import (
    MAX_OUTPUT_BYTES,
    MAX_TEMPLATE_BYTES,
    MAX_VALUE_CHARS,
    RENDER_TIME_LIMIT_S,
    load_engine,
    render_template,
    template_problems,
)
from tests.unit.test_formats import EVENT, endpoint

GOLDEN = Path(__file__).parent / "golden" / "templates"
FORMATS_PAGE = Path(__file__).parents[2] / "docs" / "guides" / "formats.md"
UPDATE = os.environ.get("CLICKHOOK_UPDATE_GOLDEN") == "1"
RECIPES = ("airtable", "telegram", "google_sheets")
# A hostile template fails well inside this, on a shared 2-core machine.
FAILS_FAST_S = 1.0


def recipe(name: str) -> str:
    return (GOLDEN / f"{name}.liquid").read_text()


def render(source: str, event: dict[str, Any] | None = None) -> Any:
    return msgspec.json.decode(render_template(source, EVENT if event is None else event))


def failure(source: str, event: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        render_template(source, EVENT if event is None else event)
    return caught.value


# --- recipes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_renders_its_golden_body(name: str) -> None:
    rendered = render(recipe(name))
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        path.write_text(json.dumps(rendered, ensure_ascii=False, indent=2) + "\n")

    assert rendered == json.loads(path.read_text()), f"differs from {path.name}"


@pytest.mark.parametrize("name", RECIPES)
def test_the_docs_show_each_recipe_as_tested(name: str) -> None:
    assert recipe(name) in FORMATS_PAGE.read_text()


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_renders_a_click_with_only_its_required_fields(name: str) -> None:
    bare = {"id": "evt_1", "type": "link.clicked", "occurred_at": "2026-11-27T11:00:00Z"}

    assert isinstance(render(recipe(name), {**bare, "link": {"id": "lnk_1"}}), dict)


# --- the json filter ------------------------------------------------------------------------------


def test_json_filter_quotes_and_escapes_whatever_a_click_holds() -> None:
    hostile = 'a"b\\c\n</script>\u2028", "admin": true, "x": "'
    event = {**EVENT, "link": {**EVENT["link"], "key": hostile}}

    assert render('{"key": {{ link.key | json }}}', event) == {"key": hostile}


def test_json_filter_writes_lists_objects_numbers_and_missing_values() -> None:
    source = "[{{ link.tags | json }}, {{ click | json }}, {{ 42 | json }}, {{ nothing | json }}]"

    assert render(source) == [EVENT["link"]["tags"], EVENT["click"], 42, None]


def test_the_whole_click_is_event() -> None:
    assert render("{{ event | json }}") == EVENT


# --- refusals, with the line or the limit ---------------------------------------------------------


def test_a_syntax_error_names_its_line() -> None:
    error = failure('{\n "a": 1,\n "b": {{ link.key | json }\n}')

    assert error.line == 3


def test_a_body_that_is_not_json_is_refused() -> None:
    assert "not valid JSON" in str(failure('{"key": {{ link.key }}}'))


def test_an_unknown_filter_is_refused_with_its_name() -> None:
    assert "unknown filter 'shell'" in str(failure("{{ link.key | shell }}"))


def test_a_template_over_the_size_limit_is_refused() -> None:
    source = '"' + "x" * MAX_TEMPLATE_BYTES + '"'

    assert "size limit" in str(failure(source))


HOSTILE: dict[str, tuple[str, str]] = {
    "a huge loop": ("{% for i in (1..1000000000) %}x{% endfor %}", "loop limit"),
    "a huge loop, reversed": ("{% for i in (1..1000000000) reversed %}{% endfor %}", "loop limit"),
    "a huge loop, offset": (
        "{% for i in (1..1000000000) offset: 999999990 %}{% endfor %}",
        "loop limit",
    ),
    "nested loops": (
        "{% for i in (1..1000) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}",
        "loop limit",
    ),
    "many loops, each under the limit": (
        "{% for i in (1..9000) %}{% endfor %}" * 100 + "1",
        "loop limit",
    ),
    "a huge body": (
        '"{% for i in (1..9999) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}"',
        "output limit",
    ),
    "a string doubled until it is huge": (
        '{% assign s = "xxxxxxxxxx" %}' + "{% assign s = s | append: s %}" * 40 + "1",
        "value limit",
    ),
    "a replace that squares its input": (
        '{% assign s = "' + "x" * 1000 + '" %}{{ s | replace: "", s | size }}',
        "value limit",
    ),
    "a huge range joined": ("{{ (1..100000000) | join | size }}", "value limit"),
    "a number squared until it is huge": (
        "{% assign n = 99999999999 %}" + "{% assign n = n | times: n %}" * 20 + "1",
        "value limit",
    ),
    "deep nesting": ("{% if true %}" * 40 + "1" + "{% endif %}" * 40, "nesting limit"),
    "deeply nested JSON": ("[" * 100 + "]" * 100, "nested more than 64"),
    "an include": ("{% include 'other' %}", "include tag is not available"),
    "a render (recursion)": ("{% render 'self' %}", "render tag is not available"),
    "a captured huge body": (
        "{% capture x %}{% for i in (1..9999) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}{% endcapture %}1",
        "output limit",
    ),
    "slow work on every iteration": (
        '{% assign s = "' + "x" * 4000 + '" %}{% for i in (1..9999) %}'
        '{% assign t = s | replace: "x", "y" | replace: "y", "x" | upcase | downcase %}'
        "{% endfor %}1",
        "time limit",
    ),
}


@pytest.mark.parametrize(("source", "limit"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_template_fails_fast_naming_the_limit(
    source: str, limit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_engine()  # Liquid's import (0.3 s, once) is not the template's
    if limit != "time limit":
        # The limit under test trips first however slow the machine: 10,000 empty loop
        # iterations took more than the 50 ms time limit once in a CI run.
        monkeypatch.setattr(template_engine, "RENDER_TIME_LIMIT_S", FAILS_FAST_S)
    started = time.perf_counter()
    problems = template_problems(source, EVENT)
    elapsed_s = time.perf_counter() - started

    assert len(problems) == 1
    assert problems[0].field == "template"
    assert limit in problems[0].problem
    assert elapsed_s < FAILS_FAST_S


def test_the_time_limit_is_wall_clock_checked_while_rendering() -> None:
    ticks: Iterator[float] = iter(range(0, 10**6))  # one second per look at the clock

    def clock() -> float:
        return float(next(ticks))

    with pytest.raises(TemplateError) as caught:
        render_template("{% for i in (1..3) %}{% endfor %}1", EVENT, clock=clock)

    assert f"more than {RENDER_TIME_LIMIT_S * 1000:g} ms" in str(caught.value)


def test_a_click_with_unexpected_data_fails_the_render_not_the_caller() -> None:
    huge = {**EVENT, "link": {**EVENT["link"], "url": "x" * (MAX_VALUE_CHARS + 1)}}

    assert "value limit" in str(failure('{"url": {{ link.url | json }}}', huge))


def test_a_body_up_to_the_output_limit_is_fine() -> None:
    size = MAX_OUTPUT_BYTES - 2
    source = '"{% for i in (1..' + str(size // 64) + ") %}" + "x" * 64 + '{% endfor %}"'

    assert len(render(source)) == size // 64 * 64


# --- delivery -------------------------------------------------------------------------------------


def test_a_templated_body_is_signed_as_rendered() -> None:
    target = endpoint(
        "template", template=recipe("telegram"), secrets=[EndpointSecret(generate_secret())]
    )

    body, headers = build_request(
        target, EVENT, webhook_id="msg_1", timestamp_s=int(time.time()), now=datetime.now(UTC)
    )

    assert body == render_template(recipe("telegram"), EVENT)
    assert Webhook(target.secrets[0].secret).verify(body, headers) == json.loads(body)
    assert headers["content-type"] == "application/json"


async def test_a_render_failure_is_a_failed_attempt_with_the_templates_error() -> None:
    target = endpoint("template", template="{% for i in (1..1000000) %}{% endfor %}1")

    class NoClient:
        async def post(self, *args: object) -> object:
            raise AssertionError("nothing may be sent")

    result = await Sender(NoClient()).attempt(  # type: ignore[arg-type]
        target, EVENT, webhook_id="msg_1", event_id="evt_1", attempt=1
    )

    assert result.outcome == "error"
    assert result.record.error == (
        "TemplateError: line 1: loop limit: more than 10000 loop iterations"
    )
