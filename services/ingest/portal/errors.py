"""What the portal tells a customer when something goes wrong: a fixed, plain sentence chosen
by the kind of error, never an exception's text (which names our classes, hosts and limits in
our words, not theirs). The details go to the server log; the page says what happened and what
to do next. Pure: no I/O, tested without a server."""

from __future__ import annotations

from dataclasses import dataclass

from shared.model.errors import Problem


@dataclass(frozen=True, slots=True)
class Plain:
    title: str
    message: str


TRY_AGAIN = "try again in a minute"
CHANGED = Plain(
    "Changed meanwhile", "This endpoint changed since you opened the page; reload and try again."
)
NOT_SAVED = Plain(
    "Not saved", f"We could not save this just now and nothing was changed; {TRY_AGAIN}."
)
LOG_UNAVAILABLE = Plain(
    "Delivery log unavailable",
    f"The delivery log is catching up; {TRY_AGAIN}. Your endpoints and clicks are not affected.",
)
UNEXPECTED = Plain(
    "Something went wrong",
    f"Something went wrong on our side; {TRY_AGAIN}. If it keeps happening, contact support.",
)
NOT_POSSIBLE = Plain("Not possible", "That could not be done; reload the page and try again.")

# By the API error's code (services.ingest.responses.ApiError): the portal runs the API's own
# operations, so these are every refusal a portal write can meet.
BY_CODE = {
    "precondition_failed": CHANGED,
    "conflict": CHANGED,
    "endpoint_disabled": Plain("Endpoint disabled", "Enable the endpoint first, then try again."),
    "replay_running": Plain(
        "Replay already running",
        "A replay of this endpoint is still running; the dead letters page shows its progress.",
    ),
    "busy": Plain("Busy", "Too many replays are running right now; try again in a few minutes."),
    "not_found": Plain("Not found", "There is no such endpoint in your account."),
    "broker_unavailable": NOT_SAVED,
    "delivery_log_unavailable": LOG_UNAVAILABLE,
}
BY_STATUS = {
    404: Plain("Not found", "There is no such page in the portal."),
    405: Plain("Not possible", "This page cannot be used that way; go back and use its buttons."),
    413: Plain("Too large", "What you sent is too large; shorten it and try again."),
}


def for_code(code: str) -> Plain:
    return BY_CODE.get(code, NOT_POSSIBLE)


def for_status(status: int) -> Plain:
    return BY_STATUS.get(status, NOT_POSSIBLE)


# --- forms ------------------------------------------------------------------------------------

LABELS = {
    "url": "URL",
    "description": "Description",
    "format": "Format",
    "template": "Template",
    "signature_styles": "Extra signature headers",
    "filters": "Filters",
    "filters.event_types": "Event types",
    "filters.link_ids": "Link ids",
    "filters.domains": "Domains",
    "filters.tags": "Tags",
    "rate_limit_per_s": "Rate limit",
}
# What to enter, for a value the form's types refused (a word where a number goes, a list too
# long): said as a hint, since the validator's own message is written for programmers.
HINTS = {
    "url": "enter the full address, such as https://hooks.example.com/clicks",
    "description": "shorten it",
    "format": "choose one of the listed formats",
    "template": "shorten it",
    "signature_styles": "choose among the listed styles",
    "filters": "list values separated by commas, fewer of them and shorter",
    "rate_limit_per_s": "enter a number of requests per second above 0, such as 10",
}
ANY_HINT = "check this value"


def label(field: str) -> str:
    return LABELS.get(field) or LABELS.get(field.partition(".")[0]) or "Form"


def field_problem(problem: Problem) -> str:
    """One of our own checks (URL policy, template checks): its words are for customers."""
    return f"{label(problem.field)}: {problem.problem}"


def field_hint(field: str) -> str:
    """A value the form's types refused, as what to enter instead."""
    hint = HINTS.get(field) or HINTS.get(field.partition(".")[0]) or ANY_HINT
    return f"{label(field)}: {hint}."


# --- delivery failures ------------------------------------------------------------------------

# An attempt's ``error`` is the exception the sender met (``ClientConnectorError: …``): for the
# log and the operators. Customers get what it means for their endpoint, by outcome.
FAILURES = {
    "timeout": "Your endpoint did not answer in time.",
    "connect_error": "We could not connect to your endpoint: check its host name and port,"
    " and that it is up.",
    "tls_error": "The secure connection to your endpoint failed: check its TLS certificate.",
    "refused_destination": "The URL leads to a private or reserved address, where webhooks"
    " are not sent.",
    "gone": "Your endpoint answered 410 Gone, so deliveries to it stopped.",
}
ANY_FAILURE = (
    "The request could not be made (a payload template that fails on this click, for example)."
)


def failure(outcome: str) -> str:
    return FAILURES.get(outcome, ANY_FAILURE)
