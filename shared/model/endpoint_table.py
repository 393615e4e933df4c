"""The in-memory view of the compacted ``webhook.endpoints`` topic. Pure; no I/O.

Every endpoint it holds carries its ``version``: the offset of the record that made its current
state, which the API shows as the endpoint's ``ETag``. Each deleted key also remembers the
offset of its tombstone, so a write applied locally right after it committed (read-your-writes)
is never undone by the follower replaying an older record of the same key.

Every service holds the whole table (100,000 endpoints are some 90 MB of it), so an endpoint is
kept in as few bytes as it can be without changing what it reads as (``_held``).
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import msgspec

from shared.model.messages import Endpoint, EndpointFilters


class _Empty:
    """Refuses every change: what the table shares between endpoints never changes."""

    __slots__ = ()

    def _refuse(self, *_args: object, **_kwargs: object) -> NoReturn:
        raise TypeError("an endpoint held by the table is read-only")


class _EmptyDict(_Empty, dict[str, str]):
    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _Empty._refuse
    update = setdefault = pop = popitem = clear = _Empty._refuse


class _EmptyList(_Empty, list[Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _Empty._refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _Empty._refuse


# One of each for every endpoint without custom headers, metadata, signature styles or filters
# (most of them): a decoded endpoint has its own empty dict or list in each (64 bytes apiece).
NO_ENTRIES: dict[str, str] = _EmptyDict()
NO_ITEMS: list[Any] = _EmptyList()
NO_FILTERS = EndpointFilters()


def _held(endpoint: Endpoint, offset: int) -> Endpoint:
    """``endpoint`` as the table keeps it: with ``version=offset``, equal to it in every field,
    in fewer bytes. Measured on the scale bench's endpoints (docs/performance.md), 1,180 bytes
    each as decoded, about 860 as held:

    - one string per account (``sys.intern``), not one per endpoint;
    - one read-only empty dict, list and filter for all the endpoints without headers,
      metadata, signature styles or filters (64 bytes each otherwise);
    - ``updated_at`` is ``created_at`` when they are equal (48 bytes; most endpoints are never
      changed);
    - lists copied to their length: the decoder leaves room for more items (24 bytes for a
      list of one)."""
    changes: dict[str, Any] = {
        "version": offset,
        "account_id": sys.intern(endpoint.account_id),
        "secrets": endpoint.secrets.copy(),
    }
    if not endpoint.headers:
        changes["headers"] = NO_ENTRIES
    if not endpoint.metadata:
        changes["metadata"] = NO_ENTRIES
    if not endpoint.signature_styles:
        changes["signature_styles"] = NO_ITEMS
    filters = endpoint.filters
    if filters == NO_FILTERS:
        changes["filters"] = NO_FILTERS
    else:
        changes["filters"] = msgspec.structs.replace(
            filters,
            **{
                name: items.copy()
                for name in filters.__struct_fields__
                if (items := getattr(filters, name))
            },
        )
    created, updated = endpoint.created_at, endpoint.updated_at
    if updated == created and updated.tzinfo is created.tzinfo:
        changes["updated_at"] = created
    return msgspec.structs.replace(endpoint, **changes)


class EndpointTable:
    def __init__(self) -> None:
        self._by_id: dict[str, Endpoint] = {}
        self._by_account: dict[str, dict[str, Endpoint]] = {}
        # The offset of each deleted key's tombstone; a held endpoint's is its version.
        self._deleted: dict[str, int] = {}
        # Kept as endpoints come and go: the gauge reads it after every write, and counting
        # a table of 100,000 at each would make a bulk import quadratic.
        self._enabled = 0
        # The offset past the newest record applied, whether it changed the table or not.
        self.records_through = 0

    def apply(self, endpoint_id: str, endpoint: Endpoint | None, offset: int) -> bool:
        """Apply the record at ``offset`` (None: a tombstone); False if an equal or newer one
        is held. The endpoint is kept with ``version=offset``."""
        self.records_through = max(self.records_through, offset + 1)
        previous = self._by_id.get(endpoint_id)
        last = previous.version if previous is not None else self._deleted.get(endpoint_id, -1)
        if last >= offset:
            return False
        if endpoint is not None and endpoint.id == endpoint_id:
            endpoint_id = endpoint.id  # the key and the endpoint share one string (memory)
        if previous is not None:
            del self._by_id[endpoint_id]
            self._enabled -= previous.enabled
            account = self._by_account.get(previous.account_id, {})
            account.pop(endpoint_id, None)
            if not account:
                self._by_account.pop(previous.account_id, None)
        if endpoint is None:
            self._deleted[endpoint_id] = offset
            return True
        self._deleted.pop(endpoint_id, None)
        held = _held(endpoint, offset)
        self._by_id[endpoint_id] = held
        self._by_account.setdefault(held.account_id, {})[endpoint_id] = held
        self._enabled += held.enabled
        return True

    def get(self, endpoint_id: str) -> Endpoint | None:
        return self._by_id.get(endpoint_id)

    def for_account(self, account_id: str) -> list[Endpoint]:
        return list(self._by_account.get(account_id, {}).values())

    def all(self) -> list[Endpoint]:
        return list(self._by_id.values())

    def counts(self) -> tuple[int, int]:
        """(enabled, disabled)."""
        return self._enabled, len(self._by_id) - self._enabled
