"""Every body the ingest API reads or writes, as msgspec structs.

Requests are decoded and validated by these structs, and responses are built from them; the
OpenAPI document (``openapi.py``) is generated from the same structs, so a limit is written
once and the document cannot drift from what the API enforces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from services.ingest.backfill import MAX_CLICKS, BackfillState
from shared.model.messages import (
    MAX_SIGNATURE_STYLES,
    MAX_STRING_CHARS,
    EndpointFilters,
    PayloadFormat,
    SignatureStyle,
)

PositiveRate = Annotated[float, msgspec.Meta(gt=0, le=100_000)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)]
SignatureStyles = Annotated[list[SignatureStyle], msgspec.Meta(max_length=MAX_SIGNATURE_STYLES)]
ClickCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_CLICKS)]
Count = Annotated[int, msgspec.Meta(ge=0)]


# --- requests ---------------------------------------------------------------------------------


class EndpointCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    description: Description = ""
    filters: EndpointFilters = EndpointFilters()
    rate_limit_per_s: PositiveRate | None = None
    enabled: bool = True
    format: PayloadFormat = "standard"
    signature_styles: SignatureStyles = []  # Standard Webhooks headers are always sent
    secret: str | None = None  # whsec_ + base64 of 24-64 bytes; generated when absent
    account_id: str | None = None  # admin tokens only


class EndpointPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    filters: EndpointFilters | msgspec.UnsetType = msgspec.UNSET
    rate_limit_per_s: PositiveRate | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    format: PayloadFormat | msgspec.UnsetType = msgspec.UNSET
    signature_styles: SignatureStyles | msgspec.UnsetType = msgspec.UNSET


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    since: datetime
    until: datetime | None = None


class BackfillRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    since: datetime
    until: datetime | None = None  # now when absent
    max_clicks: ClickCount = MAX_CLICKS


# --- responses --------------------------------------------------------------------------------


class Accepted(msgspec.Struct, kw_only=True):
    accepted: Count
    ids: list[str]


class RotatedSecret(msgspec.Struct, kw_only=True):
    id: str
    secret: str
    previous_secret_expires_at: datetime


class ReplayReport(msgspec.Struct, kw_only=True):
    endpoint_id: str
    matched: Count
    replayed: Count
    already_delivered: Count


class BackfillStatus(msgspec.Struct, kw_only=True):
    endpoint_id: str
    state: BackfillState
    since: datetime
    until: datetime
    max_clicks: int
    scanned: Annotated[int, msgspec.Meta(ge=0, description="records of `clicks` read")]
    matched: Annotated[
        int, msgspec.Meta(ge=0, description="clicks of the window this endpoint wants, queued")
    ]
    scheduled: Annotated[
        int, msgspec.Meta(ge=0, description="of those, acknowledged by the broker")
    ]
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    field: str
    problem: str
    index: int | None = None


class ErrorInfo(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: list[ErrorDetail]


class Error(msgspec.Struct, kw_only=True):
    error: ErrorInfo
