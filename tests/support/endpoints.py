"""Endpoints built in a test's own process, as the registry would store them."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.model.messages import Endpoint, EndpointSecret
from shared.model.signing import generate_secret


def endpoint_to(url: str, *, endpoint_id: str = "ep_1", account_id: str = "acc_1") -> Endpoint:
    """An enabled endpoint for ``url`` with one freshly generated secret."""
    now = datetime.now(UTC)
    return Endpoint(
        id=endpoint_id,
        account_id=account_id,
        url=url,
        secrets=[EndpointSecret(generate_secret())],
        created_at=now,
        updated_at=now,
    )
