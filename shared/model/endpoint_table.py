"""The in-memory view of the compacted ``webhook.endpoints`` topic. Pure; no I/O.

Each key remembers the offset of the record it holds, so a write applied locally right after
the broker acknowledged it (read-your-writes) is never undone by the follower replaying an
older record of the same key.
"""

from __future__ import annotations

from shared.model.messages import Endpoint


class EndpointTable:
    def __init__(self) -> None:
        self._by_id: dict[str, Endpoint] = {}
        self._by_account: dict[str, dict[str, Endpoint]] = {}
        self._offsets: dict[str, int] = {}

    def apply(self, endpoint_id: str, endpoint: Endpoint | None, offset: int) -> bool:
        """Apply a record (None: a tombstone); False if an equal or newer one is held."""
        if self._offsets.get(endpoint_id, -1) >= offset:
            return False
        self._offsets[endpoint_id] = offset
        previous = self._by_id.pop(endpoint_id, None)
        if previous is not None:
            account = self._by_account.get(previous.account_id, {})
            account.pop(endpoint_id, None)
            if not account:
                self._by_account.pop(previous.account_id, None)
        if endpoint is not None:
            self._by_id[endpoint_id] = endpoint
            self._by_account.setdefault(endpoint.account_id, {})[endpoint_id] = endpoint
        return True

    def get(self, endpoint_id: str) -> Endpoint | None:
        return self._by_id.get(endpoint_id)

    def for_account(self, account_id: str) -> list[Endpoint]:
        return list(self._by_account.get(account_id, {}).values())

    def all(self) -> list[Endpoint]:
        return list(self._by_id.values())

    def counts(self) -> tuple[int, int]:
        """(enabled, disabled)."""
        enabled = sum(1 for endpoint in self._by_id.values() if endpoint.enabled)
        return enabled, len(self._by_id) - enabled
