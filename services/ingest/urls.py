"""Endpoint URL policy. Pure; no I/O (addresses are checked again at connect time)."""

from __future__ import annotations

import ipaddress

from yarl import URL

from shared.model.ssrf import IPNetwork, refusal_reason

MAX_URL_CHARS = 2048


def url_problems(raw: str, *, allow_http: bool, allowed: tuple[IPNetwork, ...]) -> list[str]:
    """Why ``raw`` cannot be an endpoint URL; empty when it can."""
    if len(raw) > MAX_URL_CHARS:
        return [f"is longer than {MAX_URL_CHARS} characters"]
    try:
        url = URL(raw)
    except (ValueError, TypeError) as exc:
        return [f"is not a URL: {exc}"]
    schemes = {"https", "http"} if allow_http else {"https"}
    problems: list[str] = []
    if url.scheme not in schemes:
        problems.append("must use " + " or ".join(sorted(schemes)))
    if not url.raw_host:
        problems.append("needs a host")
    if url.raw_user is not None or url.raw_password is not None:
        problems.append("must not contain a user name or password")
    if url.fragment:
        problems.append("must not contain a fragment")
    if url.raw_host:
        try:
            address = ipaddress.ip_address(url.raw_host.strip("[]"))
        except ValueError:
            pass
        else:
            reason = refusal_reason(address, allowed)
            if reason is not None:
                problems.append(f"points to a {reason} address")
    return problems
