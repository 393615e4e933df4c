"""Every error clickhook raises on purpose, each carrying the context needed to act on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class ClickhookError(Exception):
    """Base of the project's own errors."""


class SettingsError(ClickhookError):
    """An environment variable holds a value the services cannot run with."""

    def __init__(self, name: str, value: str, problem: str) -> None:
        super().__init__(f"{name}={value!r}: {problem}")
        self.name = name
        self.value = value
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one input: where (a JSON path) and what."""

    field: str
    problem: str
    index: int | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"field": self.field, "problem": self.problem}
        if self.index is not None:
            out["index"] = self.index
        return out


class InvalidInput(ClickhookError):
    """Input that failed validation; ``problems`` lists every issue found."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems


# Why a record of ``clicks`` cannot be delivered: the reason label of
# clickhook_invalid_records_total, so a short fixed set (the message and problems say more).
InvalidClickReason = Literal[
    "null_value", "too_large", "malformed_json", "invalid_event", "undecodable_batch"
]


class InvalidClick(InvalidInput):
    """A ``clicks`` record that is not a deliverable click, with why in one word."""

    def __init__(self, reason: InvalidClickReason, message: str, problems: list[Problem]) -> None:
        super().__init__(message, problems)
        self.reason: InvalidClickReason = reason


class TemplateError(ClickhookError):
    """A payload template that cannot be used, or one render of it that failed: what, and on
    which line of the template when known."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {problem}" if line else problem)
        self.problem = problem
        self.line = line


class RefusedDestination(OSError):
    """The SSRF guard refused a destination address.

    An ``OSError``, as any other connect failure is; the outcome classifier checks for it
    first to tell it apart.
    """

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"refused destination {host} ({address}): {reason}")
        self.host = host
        self.address = address
        self.reason = reason


class UnsendableRequest(ClickhookError):
    """A request that cannot be put on the wire: not an http(s) URL, a line break in a header."""


class BadResponse(ClickhookError):
    """A receiver's answer that is not HTTP/1.1 as we read it, or exceeds a limit."""


class ConnectionClosed(ConnectionError):
    """The receiver closed the connection before its response head ended.

    ``answered`` tells whether any byte of a response had arrived: a kept-alive connection
    the receiver closed while idle fails with nothing, and is worth one more try.
    """

    def __init__(self, *, answered: bool) -> None:
        what = "in the middle of the response head" if answered else "before answering"
        super().__init__(f"the receiver closed the connection {what}")
        self.answered = answered


class CapsShareUnavailable(ClickhookError):
    """A delivering process got no share of the endpoint caps in time (the caps consumer
    group did not assign it one): it does not start, rather than send without a share."""

    def __init__(self, topic: str, timeout_s: float) -> None:
        super().__init__(f"no partition of {topic} assigned within {timeout_s:g}s")
        self.topic = topic
        self.timeout_s = timeout_s


class DeliveryLogUnavailable(ClickhookError):
    """The delivery log's index cannot answer now (its disk is full, it is corrupt and being
    rebuilt, or it is not open yet). Only the log's routes answer 503; it recovers by itself,
    so ``retry_after_s`` says when asking again is worth it."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(f"the delivery log is unavailable ({reason})")
        self.reason = reason
        self.retry_after_s = retry_after_s
