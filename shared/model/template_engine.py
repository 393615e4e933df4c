"""Liquid under the limits of ``shared.model.templates``, which loads this module on first use
(or ahead of it): its rules, its limits and its public functions are there. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import _GeneratorContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import msgspec
from liquid import Environment, RenderContext, Undefined
from liquid.ast import Node
from liquid.builtin.expressions import LoopExpression
from liquid.builtin.tags.for_tag import ForTag
from liquid.exceptions import (
    BlockNestingError,
    ContextDepthError,
    LiquidError,
    LocalNamespaceLimitError,
    LoopIterationLimitError,
    OutputStreamLimitError,
    ResourceLimitError,
)
from liquid.output import LimitedStringIO

from shared.model.errors import TemplateError
from shared.model.messages import MAX_JSON_DEPTH
from shared.model.templates import (
    DISABLED_TAGS,
    MAX_BLOCK_NESTING,
    MAX_INT_BITS,
    MAX_ITEMS,
    MAX_LOCALS_BYTES,
    MAX_LOOP_ITERATIONS,
    MAX_OUTPUT_BYTES,
    MAX_VALUE_CHARS,
    PARSED_CACHE_SIZE,
    RENDER_TIME_LIMIT_S,
)

# Filters whose result may be far larger than their input: checked before they run.
_REPLACERS = frozenset({"replace", "replace_first", "replace_last"})
_JOINERS = frozenset({"append", "prepend", "join", "concat"})


class RenderTimeLimitError(ResourceLimitError):
    """The render ran past its CPU-time budget."""


class ValueSizeLimitError(ResourceLimitError):
    """A filter was given, or would make, a value past the value limits."""


class TotalLoopLimitError(ResourceLimitError):
    """The loops of one render iterated more than ``MAX_LOOP_ITERATIONS`` times in all."""


# What each limit is called in an error, the 422 and the delivery log.
_LIMIT_TEXT: dict[type[LiquidError], str] = {
    OutputStreamLimitError: f"output limit: the body is larger than {MAX_OUTPUT_BYTES} bytes",
    LoopIterationLimitError: f"loop limit: more than {MAX_LOOP_ITERATIONS} loop iterations",
    TotalLoopLimitError: f"loop limit: more than {MAX_LOOP_ITERATIONS} loop iterations",
    LocalNamespaceLimitError: f"variable limit: assigned values exceed {MAX_LOCALS_BYTES} bytes",
    ContextDepthError: "depth limit: contexts nested too deep",
    BlockNestingError: f"nesting limit: blocks nested more than {MAX_BLOCK_NESTING} deep",
    RenderTimeLimitError: f"time limit: rendering took more than {RENDER_TIME_LIMIT_S * 1000:g} ms",
}


@dataclass(slots=True)
class _Meter:
    """One render's budget: a deadline and the loop iterations left."""

    deadline: float
    clock: Callable[[], float]
    iterations_left: int = MAX_LOOP_ITERATIONS

    def check_time(self) -> None:
        if self.clock() > self.deadline:
            raise RenderTimeLimitError("render time limit reached", token=None)

    def iterate(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.iterations_left -= 1
            if self.iterations_left < 0:
                raise TotalLoopLimitError("loop iteration limit reached", token=None)
            self.check_time()
            yield item


_WIDE_NUMBER = f"value limit: a number wider than {MAX_INT_BITS} bits"


def _check_value(value: Any) -> None:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise ValueSizeLimitError(
            f"value limit: a string longer than {MAX_VALUE_CHARS} characters", token=None
        )
    if isinstance(value, (list, tuple, range, dict)) and len(value) > MAX_ITEMS:
        raise ValueSizeLimitError(f"value limit: more than {MAX_ITEMS} items", token=None)
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueSizeLimitError(_WIDE_NUMBER, token=None)


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(value)) if value is not None else 0


def _check_result_size(name: str, left: Any, args: tuple[Any, ...]) -> None:
    """Refuse, before running, a filter whose result would break the value limits."""
    if name in _REPLACERS and len(args) >= 1 and isinstance(left, str):
        old = str(args[0])
        new = _text_len(args[1]) if len(args) > 1 else 0
        count = (len(left) + 1 if old == "" else left.count(old)) if name == "replace" else 1
        size = len(left) + count * max(new - len(old), 0)
    elif name in _JOINERS:
        parts = [left, *args]
        size = sum(len(p) if isinstance(p, (list, tuple, range)) else _text_len(p) for p in parts)
        if name == "join" and isinstance(left, (list, tuple)):
            size = sum(_text_len(item) for item in left) + len(left) * _text_len(
                args[0] if args else " "
            )
    elif name == "times" and isinstance(left, int) and args and isinstance(args[0], int):
        if left.bit_length() + args[0].bit_length() > MAX_INT_BITS:
            raise ValueSizeLimitError(_WIDE_NUMBER, token=None)
        return
    else:
        return
    if size > MAX_VALUE_CHARS:
        raise ValueSizeLimitError(
            f"value limit: {name} would make a value longer than {MAX_VALUE_CHARS}", token=None
        )


class _MeteredContext(RenderContext):
    """A render context that charges every loop iteration and filter call to one meter."""

    __slots__ = ("meter",)
    meter: _Meter

    def loop(
        self, namespace: Mapping[str, object], forloop: Any
    ) -> _GeneratorContextManager[RenderContext]:
        forloop.it = self.meter.iterate(forloop.it)
        return super().loop(namespace, forloop)

    def filter(self, name: str, token: Any) -> Callable[..., object]:
        func = super().filter(name, token)
        meter = self.meter

        def guarded(left: Any, *args: Any, **kwargs: Any) -> object:
            try:
                meter.check_time()
                for value in (left, *args, *kwargs.values()):
                    _check_value(value)
                _check_result_size(name, left, args)
                result = func(left, *args, **kwargs)
                _check_value(result)
            except ResourceLimitError as exc:
                exc.token = exc.token or token  # the line of the filter, for the message
                raise
            return result

        return guarded


class _BoundedLoopExpression(LoopExpression):
    """A for loop's sequence, refused when longer than ``MAX_ITEMS`` before it is sliced:
    ``offset``, ``limit`` and ``reversed`` walk or copy the whole sequence first, and a range
    literal such as ``(1..1000000000)`` costs nothing to write."""

    __slots__ = ()

    def _slice(self, it: Iterator[object], length: int, context: RenderContext, **kw: Any) -> Any:
        if length > MAX_ITEMS:
            raise TotalLoopLimitError("loop over too many items", token=None)
        return super()._slice(it, length, context, **kw)


class _BoundedForTag(ForTag):
    def parse(self, stream: Any) -> Node:
        node = super().parse(stream)
        expression = getattr(node, "expression", None)
        if type(expression) is LoopExpression:
            # Same slots, one method more: the node keeps everything Liquid parsed.
            expression.__class__ = _BoundedLoopExpression
        return node


class _MeteredOutput(LimitedStringIO):
    """The body as it is written: bounded in bytes, and a clock check at every write."""

    def __init__(self, meter: _Meter) -> None:
        super().__init__(limit=MAX_OUTPUT_BYTES)
        self._meter = meter

    def write(self, text: str) -> int:
        self._meter.check_time()
        return super().write(text)


def _json_filter(value: object) -> str:
    """Any value as JSON text: strings quoted and escaped, missing values as null."""
    return msgspec.json.encode(value, enc_hook=_json_default).decode()


def _json_default(value: object) -> object:
    if isinstance(value, Undefined):
        return None
    if isinstance(value, range):
        return list(value)
    return str(value)


class _TemplateEnvironment(Environment):
    loop_iteration_limit = MAX_LOOP_ITERATIONS
    output_stream_limit = MAX_OUTPUT_BYTES
    local_namespace_limit = MAX_LOCALS_BYTES
    context_depth_limit = 10
    block_nesting_limit = MAX_BLOCK_NESTING


def _environment() -> Environment:
    env = _TemplateEnvironment()
    for tag in DISABLED_TAGS:
        del env.tags[tag]
    env.add_tag(_BoundedForTag)
    env.add_filter("json", _json_filter)
    return env


_ENV = _environment()


def _line(exc: LiquidError) -> int | None:
    found = exc.context()
    return found[0] if found else None


def _problem_text(exc: LiquidError) -> str:
    limit = _LIMIT_TEXT.get(type(exc))
    if limit is not None:
        return limit
    message = str(exc.message)
    for tag in DISABLED_TAGS:
        if f"'{tag}'" in message:
            return f"the {tag} tag is not available in payload templates"
    return message


def _as_template_error(exc: LiquidError) -> TemplateError:
    return TemplateError(_problem_text(exc), _line(exc))


@lru_cache(maxsize=PARSED_CACHE_SIZE)
def parsed(source: str) -> Any:
    try:
        return _ENV.from_string(source)
    except LiquidError as exc:
        raise _as_template_error(exc) from None
    except RecursionError:
        raise TemplateError(f"nesting limit: nested more than {MAX_BLOCK_NESTING} deep") from None


def render(source: str, event: Mapping[str, Any], clock: Callable[[], float]) -> str:
    """The text ``source`` makes of one click, within every limit but the body's being JSON
    (``templates.render_template`` checks that); else ``TemplateError``."""
    template = parsed(source)
    meter = _Meter(deadline=clock() + RENDER_TIME_LIMIT_S, clock=clock)
    context = _MeteredContext(template, globals=template.make_globals({**event, "event": event}))
    context.meter = meter
    output = _MeteredOutput(meter)
    try:
        template.render_with_context(context, output)
    except LiquidError as exc:
        raise _as_template_error(exc) from None
    except RecursionError:
        raise TemplateError(f"depth limit: nested more than {MAX_JSON_DEPTH} deep") from None
    except Exception as exc:  # noqa: BLE001 - a customer's template never crashes a delivery
        raise TemplateError(f"the template failed: {type(exc).__name__}: {exc}"[:300]) from None
    return output.getvalue()
