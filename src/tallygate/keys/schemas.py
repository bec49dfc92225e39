"""API key bodies. Limits in money appear as ``*_nanos`` (exact integer nano-units of the
bucket's currency) and as the same value in an exact decimal string; input limits are decimal
strings. Never a float."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

RouteType = Literal["official", "routed"]
ROUTE_TYPES: tuple[RouteType, ...] = ("official", "routed")
Bucket = Literal["credit", "routed"]
KeyStatus = Literal["active", "revoked", "expired"]


class SpendLimitIn(BaseModel):
    """Limits for one bucket, as decimal strings in the bucket's currency; null = no limit.
    In an update, an omitted field keeps its value and null removes the limit."""

    total: str | None = None
    """All-time limit on what this key may spend from the bucket."""
    daily: str | None = None
    """Limit per UTC day."""


class KeyCreate(BaseModel):
    label: str = Field(max_length=200)
    project: str = Field(default="", max_length=200)
    """Free label for team accounting (filters, exports, spend by project)."""
    allowed_models: list[str] = Field(default_factory=list)
    """Glob patterns over public model names (``gpt-4o*``, ``claude-*``); empty = every model."""
    allowed_route_types: list[RouteType] = Field(default_factory=lambda: list(ROUTE_TYPES))
    default_route_type: RouteType | None = None
    """Used when the client sends a bare model name; defaults to ``routed`` when allowed, else
    the only allowed route type."""
    rpm_limit: int | None = None
    """Requests per minute; null = no limit."""
    tpm_limit: int | None = None
    """Tokens per minute; null = no limit."""
    expires_at: dt.datetime | None = None
    """ISO 8601; must be in the future. A time without an offset is UTC."""
    spend_limits: dict[Bucket, SpendLimitIn] = Field(default_factory=dict)


class KeyUpdate(BaseModel):
    """Only the fields present change; null clears a nullable field."""

    label: str | None = Field(default=None, max_length=200)
    project: str | None = Field(default=None, max_length=200)
    allowed_models: list[str] | None = None
    allowed_route_types: list[RouteType] | None = None
    default_route_type: RouteType | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    expires_at: dt.datetime | None = None
    spend_limits: dict[Bucket, SpendLimitIn] | None = None


class KeyRevoke(BaseModel):
    reason: str = Field(default="", max_length=500)


class BucketSpend(BaseModel):
    bucket: Bucket
    currency: str
    limit_total_nanos: int | None
    """All-time limit in nano-units; null = no limit."""
    limit_total: str | None
    limit_daily_nanos: int | None
    """Per-UTC-day limit in nano-units; null = no limit."""
    limit_daily: str | None
    total_spent_nanos: int
    """Settled charges through this key, all time, in nano-units."""
    total_spent: str
    today_spent_nanos: int
    """Settled charges through this key today (UTC), in nano-units."""
    today_spent: str
    reserved_nanos: int
    """Held by this key's in-flight requests, in nano-units."""
    reserved: str


class KeyOut(BaseModel):
    id: int
    user_id: int
    prefix: str
    """The visible start of the key (its first 10 characters); the rest is never shown again."""
    label: str
    project: str
    allowed_models: list[str]
    allowed_route_types: list[RouteType]
    default_route_type: RouteType
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime
    status: KeyStatus
    spend: list[BucketSpend]


class KeyCreated(KeyOut):
    key: str
    """The full key. Shown once, in this response; only its SHA-256 is stored."""


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None
    """Pass as ``cursor`` to get the next page; null on the last page."""
