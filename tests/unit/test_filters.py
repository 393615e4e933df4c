"""Which endpoints a click goes to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.model.filters import endpoint_wants, filters_match
from shared.model.messages import ClickEvent, Endpoint, EndpointFilters, EndpointSecret

AT = datetime(2025, 1, 1, tzinfo=UTC)


def _event(
    *,
    type_: str = "link.clicked",
    account_id: str = "acc_1",
    link_id: str = "lnk_1",
    domain: str | None = "短.be",
    tags: tuple[str, ...] = ("promo", "spring"),
) -> ClickEvent:
    return ClickEvent(
        id="evt_1",
        type=type_,
        account_id=account_id,
        occurred_at=AT,
        link_id=link_id,
        domain=domain,
        tags=tags,
        payload={},
    )


def _endpoint(
    *, account_id: str = "acc_1", enabled: bool = True, filters: EndpointFilters | None = None
) -> Endpoint:
    return Endpoint(
        id="ep_1",
        account_id=account_id,
        url="https://hooks.example.com/in",
        enabled=enabled,
        filters=filters or EndpointFilters(),
        secrets=[EndpointSecret("whsec_AAAA")],
        created_at=AT,
        updated_at=AT,
    )


@pytest.fixture(name="event")
def fixture_event() -> ClickEvent:
    return _event()


def test_no_filters_match_every_event(event: ClickEvent) -> None:
    assert filters_match(EndpointFilters(), event)


def test_empty_filter_lists_match_every_event(event: ClickEvent) -> None:
    assert filters_match(EndpointFilters(event_types=[], link_ids=[], domains=[], tags=[]), event)


@pytest.mark.parametrize(
    ("filters", "matches"),
    [
        (EndpointFilters(event_types=["link.clicked", "qr.scanned"]), True),
        (EndpointFilters(event_types=["qr.scanned"]), False),
        (EndpointFilters(link_ids=["lnk_0", "lnk_1"]), True),
        (EndpointFilters(link_ids=["lnk_2"]), False),
        (EndpointFilters(domains=["短.be"]), True),
        (EndpointFilters(domains=["xn--s7y.be"]), False),
        (EndpointFilters(tags=["spring"]), True),
        (EndpointFilters(tags=["autumn", "promo"]), True),
        (EndpointFilters(tags=["autumn"]), False),
    ],
)
def test_each_filter_matches_listed_values_only(
    event: ClickEvent, filters: EndpointFilters, matches: bool
) -> None:
    assert filters_match(filters, event) is matches


def test_every_non_empty_filter_must_match(event: ClickEvent) -> None:
    filters = EndpointFilters(event_types=["link.clicked"], tags=["autumn"])
    assert not filters_match(filters, event)


def test_a_domain_filter_does_not_match_an_event_without_domain() -> None:
    assert not filters_match(EndpointFilters(domains=["短.be"]), _event(domain=None))


def test_a_tag_filter_does_not_match_an_untagged_event() -> None:
    assert not filters_match(EndpointFilters(tags=["promo"]), _event(tags=()))


def test_filters_compare_values_exactly(event: ClickEvent) -> None:
    assert not filters_match(EndpointFilters(event_types=["Link.Clicked"]), event)


def test_endpoint_wants_a_matching_event_of_its_account(event: ClickEvent) -> None:
    assert endpoint_wants(_endpoint(filters=EndpointFilters(tags=["promo"])), event)


def test_endpoint_ignores_events_of_other_accounts(event: ClickEvent) -> None:
    assert not endpoint_wants(_endpoint(account_id="acc_2"), event)


def test_disabled_endpoint_wants_nothing(event: ClickEvent) -> None:
    assert not endpoint_wants(_endpoint(enabled=False), event)


def test_endpoint_ignores_events_its_filters_reject(event: ClickEvent) -> None:
    assert not endpoint_wants(_endpoint(filters=EndpointFilters(link_ids=["lnk_9"])), event)
