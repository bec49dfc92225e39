"""Adjustment bodies. Money appears as ``*_nanos`` (exact integer nano-units of the bucket's
currency) beside the same value as an exact decimal string; input is a signed decimal string.
Never a float."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

Bucket = Literal["credit", "routed"]


class AdjustmentCreate(BaseModel):
    user_id: int = Field(ge=1)
    bucket: Bucket | None = None
    """The bucket to adjust; defaults to the bucket of the receipt named by ``request_id``."""
    amount: str = Field(max_length=40)
    """Signed decimal in the bucket's currency: ``"2.5"`` credits the user, ``"-2.5"`` debits
    (a debit takes only available value: 402 when the bucket cannot cover it)."""
    reason: str = Field(max_length=2000)
    """Mandatory; shown to the user beside the request it corrects."""
    request_id: str | None = Field(default=None, max_length=64)
    """The receipt (request id) this adjustment corrects, if any; it must be the user's."""
    idempotency_key: str | None = Field(default=None, max_length=100)
    """Retry-safe: the same key and body returns the first adjustment; another body, 409."""


class AdjustmentOut(BaseModel):
    id: int
    user_id: int
    bucket: Bucket
    currency: str
    amount_nanos: int
    """Signed nano-units: positive credited the user, negative debited."""
    amount: str
    direction: Literal["credit", "debit"]
    reason: str
    request_id: str | None
    entry_id: int
    """The ledger entry (kind ``adjustment``)."""
    operator: str | None
    """Who made it (operators' views only)."""
    created_at: dt.datetime
    balance_after_nanos: int | None
    """The bucket's balance right after this adjustment."""
    balance_after: str | None


class AdjustmentList(BaseModel):
    items: list[AdjustmentOut]
    next_cursor: str | None
