"""What PostgreSQL's byte budget drops history down to (``pg_store.budget_target``)."""

from __future__ import annotations

import pytest

from services.ingest.delivery_log.pg_store import budget_target

BUDGET = 1000


@pytest.mark.parametrize(
    ("per_endpoint_bytes", "target"),
    [
        (0, 800.0),  # history alone: down to 80 %
        (799, 800.0),
        (800, 900.0),  # the per-endpoint tables take 80 %: dropping to it would take all
        (899, 900.0),
        (900, 1000.0),  # past 90 %: only down to the whole budget
        (1500, 1000.0),  # past all of it: the store is full whatever goes
    ],
)
def test_history_goes_only_as_far_as_makes_room(per_endpoint_bytes: int, target: float) -> None:
    assert budget_target(per_endpoint_bytes, BUDGET) == target
