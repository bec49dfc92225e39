"""Campaign, code and redemption bodies. Money appears as ``*_nanos`` (exact integer nano-units
of the bucket's currency) beside the same value as an exact decimal string; input amounts are
decimal strings. Never a float."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

Bucket = Literal["credit", "routed"]
RouteType = Literal["official", "routed"]
CampaignKind = Literal["codes", "starter"]
Status = Literal["active", "disabled"]
CampaignState = Literal["active", "disabled", "scheduled", "ended", "exhausted"]

ROUTES: dict[str, list[RouteType]] = {"credit": ["official"], "routed": ["routed"]}
"""Which routes a bucket pays: official Credit pays official routes, routed balance routed."""


class CampaignCreate(BaseModel):
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    kind: CampaignKind = "codes"
    """``codes``: claimed with redeem codes; ``starter``: granted once to every new account
    (the newest active starter campaign of each bucket applies)."""
    bucket: Bucket
    amount: str = Field(max_length=40)
    """Granted per claim, as a decimal string in the bucket's currency."""
    valid_from: dt.datetime | None = None
    """Claims are refused before this time (ISO 8601; no offset = UTC). Null: open."""
    valid_until: dt.datetime | None = None
    """Claims are refused from this time on. Null: open."""
    credit_expires_at: dt.datetime | None = None
    """The credited lot expires at this time (at the latest)."""
    credit_ttl_seconds: int | None = Field(default=None, ge=1)
    """The credited lot expires this long after the claim. Null (and no fixed time): never."""
    total_cap: int | None = Field(default=None, ge=1)
    """Claims allowed in total; null = no cap."""
    per_account_limit: int = Field(default=1, ge=1, le=1000)
    """Claims allowed per account (one-time by default; starter campaigns: always 1)."""
    per_address_limit: int | None = Field(default=None, ge=1)
    """Starter campaigns: new accounts granted per client address; null = no cap."""
    lot_priority: int = Field(default=100, ge=0, le=1000)
    """Draw order of the credited lot (lower is spent first; paid top-ups use 100)."""


class CampaignStats(BaseModel):
    """Exact, from the lots the campaign's claims opened and the postings that drew on them:
    credited = debt_repaid + spent + expired + other_debits + unspent."""

    redemptions: int
    credited_nanos: int
    credited: str
    debt_repaid_nanos: int
    """Part of the credit that repaid debt on the bucket and opened no lot."""
    debt_repaid: str
    spent_nanos: int
    """Drawn by usage (settled requests)."""
    spent: str
    spent_requests: int
    """Usage entries (one per charged request) that drew on the campaign's lots."""
    expired_nanos: int
    expired: str
    other_debits_nanos: int
    """Taken by adjustments, refunds or reversals."""
    other_debits: str
    unspent_nanos: int
    """Still in the lots (including the held part)."""
    unspent: str
    held_nanos: int
    """Part of the unspent value reserved by requests in flight."""
    held: str


class CampaignOut(BaseModel):
    id: int
    name: str
    description: str
    kind: CampaignKind
    bucket: Bucket
    routes: list[RouteType]
    """The routes this credit can pay."""
    currency: str
    amount_nanos: int
    amount: str
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    credit_expires_at: dt.datetime | None
    credit_ttl_seconds: int | None
    total_cap: int | None
    per_account_limit: int
    per_address_limit: int | None
    lot_priority: int
    redeemed_count: int
    status: Status
    state: CampaignState
    """``status`` and the clock together: active, disabled, scheduled (before the window),
    ended (after it) or exhausted (cap reached)."""
    created_by: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None
    stats: CampaignStats | None = None


class CampaignList(BaseModel):
    items: list[CampaignOut]
    next_cursor: str | None


class StatusChange(BaseModel):
    reason: str = Field(default="", max_length=1000)


class CodesGenerate(BaseModel):
    count: int = Field(default=1, ge=1, le=10_000)
    """Single-use codes to generate (shared: must be 1)."""
    shared: bool = False
    """One code many accounts may claim, each within the campaign's per-account limit."""
    prefix: str = Field(default="", max_length=16)
    """Letters and digits put in front of every code (``WELCOME`` → ``WELCOME-7K3M-…``)."""


class GeneratedCode(BaseModel):
    id: int
    code: str
    """The code. Shown in this response only; the server keeps an HMAC of it."""
    prefix: str


class CodesGenerated(BaseModel):
    campaign_id: int
    campaign: str
    shared: bool
    codes: list[GeneratedCode]


class CodeOut(BaseModel):
    id: int
    campaign_id: int
    prefix: str
    """The visible start of the code; the rest was shown once, at generation."""
    shared: bool
    max_redemptions: int | None
    redeemed_count: int
    status: Status
    deletable: bool
    """Only codes never redeemed can be deleted; redeemed ones stay traceable."""
    created_at: dt.datetime
    disabled_at: dt.datetime | None


class CodeList(BaseModel):
    items: list[CodeOut]
    next_cursor: str | None


class RedeemRequest(BaseModel):
    code: str = Field(max_length=200)
    """As typed: case, spaces and hyphens do not matter; I/L read as 1 and O as 0."""


class RedemptionOut(BaseModel):
    id: int
    campaign_id: int
    campaign: str
    kind: Literal["code", "starter"]
    code_prefix: str
    """Visible prefix of the claimed code ("" for a starter grant)."""
    user_id: int
    email: str
    bucket: Bucket
    routes: list[RouteType]
    currency: str
    amount_nanos: int
    amount: str
    entry_id: int | None
    """The ledger entry that credited the bucket."""
    lot_id: int | None
    """The lot it opened (null when all of it repaid debt)."""
    expires_at: dt.datetime | None
    """When the credited lot expires (its unspent remainder then leaves); null: never."""
    remaining_nanos: int
    """What is left of the lot now."""
    remaining: str
    created_at: dt.datetime


class Redeemed(RedemptionOut):
    balance_nanos: int
    """The bucket's balance right after the claim."""
    balance: str
    available_nanos: int
    """Balance minus what requests in flight hold."""
    available: str


class RedemptionPage(BaseModel):
    items: list[RedemptionOut]
    next_cursor: str | None


class LotUse(BaseModel):
    """One usage entry that drew on a campaign's lots: a request and what it took from them."""

    request_id: str | None
    entry_id: int
    user_id: int
    spent_nanos: int
    spent: str
    model: str
    at: dt.datetime


class LotUsePage(BaseModel):
    items: list[LotUse]
    next_cursor: str | None
