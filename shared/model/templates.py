"""Payload templates: a body rendered from a click by the endpoint's own Liquid template. Pure.

Templates are written by customers, so they are untrusted code run on every click. Liquid
(python-liquid) has no way to reach Python objects, files or the network; what is left to
bound is work, and each bound is enforced while rendering, not estimated beforehand:

- size: the template's source (``MAX_TEMPLATE_BYTES``, checked when written) and the body
  (``MAX_OUTPUT_BYTES``, checked as it is written, so a huge body is never built);
- loops: ``MAX_LOOP_ITERATIONS`` iterations in all, across every loop of one render (Liquid's
  own limit is per nest of loops, so a template of many loops would multiply it);
- values: no filter takes or makes a string longer than ``MAX_VALUE_CHARS``, a list longer
  than ``MAX_ITEMS`` or an integer wider than ``MAX_INT_BITS`` (``replace``, ``append`` and
  ``join`` are checked before they run: their result could be the square of their input);
- time: ``RENDER_TIME_LIMIT_S`` of the rendering thread's CPU time (what a render takes from
  every other endpoint's deliveries; wall time would also count other processes' turns on a
  busy machine, and fail a template that is not slow), checked at every loop iteration, filter
  call and write. Liquid has no timer; these are the steps whose count the template controls, and
  each is bounded in cost by the limits above, so no render runs much past the deadline;
- ``include`` and ``render`` (other templates, recursion) and ``tablerow`` (HTML) are off.

The body must be JSON (it is sent as ``application/json`` and signed as rendered): the
``json`` filter encodes any value safely, quotes and escapes included.

Liquid itself (``template_engine``) is loaded on first use, not with this module: most services
never render a template, and Liquid with what it imports is some 4 MB of every process and
0.3 s of its start. A service that holds a template endpoint loads it while it starts
(``load_engine``), so that no delivery waits for the import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.model.errors import InvalidInput, Problem, TemplateError
from shared.model.messages import decode_json

MAX_TEMPLATE_BYTES = 16 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
MAX_LOOP_ITERATIONS = 10_000
MAX_VALUE_CHARS = 64 * 1024
MAX_ITEMS = 10_000
MAX_INT_BITS = 1024
MAX_LOCALS_BYTES = 256 * 1024  # assign and capture, as sys.getsizeof counts them
MAX_BLOCK_NESTING = 20
RENDER_TIME_LIMIT_S = 0.05
# Parsed templates kept per process: endpoints share few templates, parsing costs more than
# rendering, and a bounded cache keeps one account's many templates to its own share.
PARSED_CACHE_SIZE = 512

TEMPLATE_HELP = (
    'a Liquid template of the JSON body (format "template"); the click\'s fields are its '
    "variables (link.key, click.country, occurred_at; the whole click is event). Insert values "
    "with the json filter: {{ link.url | json }}. At most "
    f"{MAX_TEMPLATE_BYTES} bytes; a render may loop {MAX_LOOP_ITERATIONS} times, take "
    f"{RENDER_TIME_LIMIT_S * 1000:g} ms and write {MAX_OUTPUT_BYTES} bytes of valid JSON; "
    "include, render and tablerow are not available"
)
DISABLED_TAGS = ("include", "render", "tablerow")


def load_engine() -> None:
    """Load Liquid now rather than at the first template parsed or rendered."""
    from shared.model import template_engine  # noqa: F401, PLC0415 - the point: loaded here


def parse_template(source: str) -> None:
    """Check that ``source`` is a usable template; raise ``TemplateError`` saying why not."""
    size = len(source.encode())
    if size > MAX_TEMPLATE_BYTES:
        too_big = f"size limit: the template is {size} bytes, at most {MAX_TEMPLATE_BYTES}"
        raise TemplateError(too_big)
    from shared.model import template_engine  # noqa: PLC0415 - loaded on first use (above)

    template_engine.parsed(source)


def render_template(
    source: str, event: Mapping[str, Any], *, clock: Callable[[], float] = time.thread_time
) -> bytes:
    """The body ``source`` makes of one click: JSON, within every limit; else ``TemplateError``.

    The click's fields are the template's variables (``link.key``, ``click.country``), and the
    whole click is ``event``.
    """
    parse_template(source)
    from shared.model import template_engine  # noqa: PLC0415 - loaded on first use (above)

    return _json_body(template_engine.render(source, event, clock))


def _json_body(text: str) -> bytes:
    body = text.encode()
    try:
        decode_json(body)
    except InvalidInput as exc:
        detail = exc.problems[0].problem if exc.problems else exc.message
        raise TemplateError(f"the body is not valid JSON: {detail}") from None
    return body


def template_problems(source: str, sample: Mapping[str, Any]) -> list[Problem]:
    """Why ``source`` cannot be an endpoint's template (it must parse and render ``sample``
    to JSON within the limits), as problems of the field ``template``; empty when it can."""
    try:
        render_template(source, sample)
    except TemplateError as exc:
        return [Problem("template", str(exc))]
    return []
