"""GET /v1/meta's answer, built from the settings and the code; the egress setting."""

from __future__ import annotations

from typing import get_args

import pytest

from services.ingest.meta_api import matches_any, package_version, service_meta
from shared.model.errors import SettingsError
from shared.model.messages import EVENT_TYPES, SignatureStyle
from shared.model.signing import SIGNATURE_SCHEMES
from shared.ops.settings import Settings, load_settings


def test_egress_cidrs_default_to_none_and_are_parsed_at_start() -> None:
    settings = load_settings({"CLICKHOOK_EGRESS_CIDRS": "203.0.113.0/24, 2001:db8::/48"})

    assert load_settings({}).egress_cidrs == ()
    assert [str(n) for n in settings.egress_cidrs] == ["203.0.113.0/24", "2001:db8::/48"]


def test_a_bad_egress_cidr_stops_the_start_naming_the_setting() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"CLICKHOOK_EGRESS_CIDRS": "203.0.113.0/33"})

    assert (raised.value.name, raised.value.value) == ("CLICKHOOK_EGRESS_CIDRS", "203.0.113.0/33")


def test_the_answer_states_ranges_schedule_version_and_event_types() -> None:
    settings = load_settings(
        {"CLICKHOOK_EGRESS_CIDRS": "198.51.100.7/32", "CLICKHOOK_RETRY_SCHEDULE": "5s,90s,2h"}
    )

    meta = service_meta(settings)

    assert meta.egress_cidrs == ["198.51.100.7/32"]
    assert meta.retry_schedule.delays_s == [5.0, 90.0, 7200.0]
    assert meta.retry_schedule.written == "5s,90s,2h"
    assert meta.retry_schedule.attempts == 4
    assert meta.version == package_version() != "unknown"
    assert meta.event_types == list(EVENT_TYPES) == ["link.clicked"]


def test_every_signature_style_an_endpoint_can_ask_for_is_a_published_scheme() -> None:
    names = [scheme.name for scheme in service_meta(Settings()).signature_schemes]

    assert names == ["standard-webhooks-v1", *get_args(SignatureStyle)]
    assert [s.always for s in SIGNATURE_SCHEMES] == [True, False, False]


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ('"a"', True),
        ('W/"a"', True),
        ('"b", "a"', True),
        ("*", True),
        ('"b"', False),
    ],
)
def test_if_none_match_compares_weakly(header: str | None, matches: bool) -> None:
    assert matches_any(header, '"a"') is matches
