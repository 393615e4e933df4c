"""Imported at start by every Python process of the README test (its directory is put on
PYTHONPATH): deliveries may connect to loopback addresses only, whatever a README block
registers. Tests send traffic to loopback only; a block that registers a real receiver's URL
(Slack, Zapier, …) must be marked not run, and if one is not, its deliveries are refused here,
at the SSRF check every connection passes, instead of leaving the machine."""

from __future__ import annotations

from collections.abc import Iterable

try:
    from shared.model import ssrf
except ImportError:  # a Python without clickhook: it delivers nothing anyway
    pass
else:
    _policy = ssrf.refusal_reason

    def _loopback_only(address: ssrf.IPAddress, allowed: Iterable[ssrf.IPNetwork]) -> str | None:
        if not address.is_loopback:
            return "not loopback: the README test sends nothing off this machine"
        return _policy(address, allowed)

    ssrf.refusal_reason = _loopback_only
