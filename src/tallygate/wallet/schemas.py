"""Wallet bodies. Every amount appears twice: ``*_nanos``, an exact integer count of nano-units
(10⁻⁹ of the bucket's currency), and the same value as an exact decimal string. Never a float."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

Bucket = Literal["credit", "routed"]


class BucketBalance(BaseModel):
    bucket: Bucket
    label: str
    """"Credit" (official model Credit) or "Routed balance" — two balances, never interchangeable."""
    currency: str
    balance_nanos: int
    """Σ postings on the bucket account, in nano-units."""
    balance: str
    held_nanos: int
    """Reserved by in-flight requests (pending holds), in nano-units."""
    held: str
    available_nanos: int
    """balance − held, in nano-units: what new requests can spend."""
    available: str
    debt_nanos: int
    """Owed on this bucket after a refund or dispute hit spent money; blocks new requests."""
    debt: str


class Wallet(BaseModel):
    user_id: int
    buckets: list[BucketBalance]


class LedgerLine(BaseModel):
    entry_id: int
    time: dt.datetime
    kind: str
    """topup, refund, reversal, redeem, adjustment, usage, expiry …"""
    currency: str
    amount_nanos: int
    """Signed change of the bucket's balance by this entry, in nano-units."""
    amount: str
    balance_after_nanos: int | None
    """The bucket's balance right after this entry, in nano-units."""
    balance_after: str | None
    cause_type: str | None
    cause_id: str | None
    memo: str


class LedgerPage(BaseModel):
    bucket: Bucket
    currency: str
    items: list[LedgerLine]
    next_cursor: str | None
    """Pass as ``cursor`` to get the next (older) page; null on the last page."""


class ExpiringCredit(BaseModel):
    """Credit in a lot that expires (promotional credit, mostly): what is left of it and when
    the rest goes."""

    bucket: Bucket
    currency: str
    lot_id: int
    kind: str
    """promo (a redeem code or starter credit), paid or adjustment."""
    original_nanos: int
    remaining_nanos: int
    remaining: str
    expires_at: dt.datetime
    source: str
    """What credited it (the campaign's name, for promotional credit)."""
    entry_id: int
