"""Which endpoints a click goes to. Pure; no I/O."""

from __future__ import annotations

from shared.model.messages import ClickEvent, Endpoint, EndpointFilters


def _allows(allowed: list[str] | None, value: str | None) -> bool:
    return not allowed or (value is not None and value in allowed)


def filters_match(filters: EndpointFilters, event: ClickEvent) -> bool:
    """Every non-empty filter must match; tags match when the link has any listed tag."""
    return (
        _allows(filters.event_types, event.type)
        and _allows(filters.link_ids, event.link_id)
        and _allows(filters.domains, event.domain)
        and (not filters.tags or any(tag in filters.tags for tag in event.tags))
    )


def endpoint_wants(endpoint: Endpoint, event: ClickEvent) -> bool:
    return (
        endpoint.enabled
        and endpoint.account_id == event.account_id
        and filters_match(endpoint.filters, event)
    )
