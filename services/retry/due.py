"""When a retry tier's record may be redelivered: its due time, from its header.

Records of one tier topic are in due order (to within the jitter cap), so the partition
worker holds a partition whose head is not due until exactly then (``not_before_ms``).
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.model.topics import HEADER_DUE_AT_MS, header_int


def due_at_ms_from_headers(headers: Iterable[tuple[str, bytes | None]]) -> int | None:
    return header_int(headers, HEADER_DUE_AT_MS)
