"""Channel bodies. The secret is write-only: requests may carry it, responses never do (only
``has_secret``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

RouteType = Literal["official", "routed"]
Kind = Literal["openai_compatible"]


class ChannelCreate(BaseModel):
    name: str = Field(max_length=200)
    """Internal name, operators only."""
    label: str = Field(max_length=200)
    """Public label: what users and receipts see instead of the upstream."""
    kind: Kind = "openai_compatible"
    base_url: str = Field(max_length=500)
    """The upstream's OpenAI-compatible base, e.g. ``https://api.openai.com/v1``."""
    secret: str = Field(default="", max_length=4000)
    """The upstream API key; stored encrypted, never returned."""
    route_type: RouteType
    priority: int = 0
    """Higher is tried first; channels of equal priority share traffic by weight."""
    weight: int = 1
    enabled: bool = True
    timeout_seconds: int = 120


class ChannelUpdate(BaseModel):
    """Only the fields present change. ``secret``: a new value replaces it, "" removes it."""

    label: str | None = Field(default=None, max_length=200)
    base_url: str | None = Field(default=None, max_length=500)
    secret: str | None = Field(default=None, max_length=4000)
    route_type: RouteType | None = None
    priority: int | None = None
    weight: int | None = None
    enabled: bool | None = None
    timeout_seconds: int | None = None


class ModelMapping(BaseModel):
    model: str = Field(max_length=200)
    """Public model name (must exist in the catalog)."""
    upstream_model: str = Field(max_length=200)
    """The model id this channel's upstream expects."""


class MappingsPut(BaseModel):
    models: list[ModelMapping]
    """The channel's complete mapping: replaces the previous one."""


class ChannelOut(BaseModel):
    id: int
    name: str
    label: str
    kind: Kind
    base_url: str
    has_secret: bool
    route_type: RouteType
    priority: int
    weight: int
    enabled: bool
    timeout_seconds: int
    created_at: dt.datetime
    models: list[ModelMapping]


class ChannelTest(BaseModel):
    model: str | None = Field(default=None, max_length=200)
    """Upstream model id to ask; default: the first mapped model's upstream id."""


class ChannelTestResult(BaseModel):
    ok: bool
    status: int | None
    """The upstream's HTTP status; null when no answer came."""
    latency_ms: int
    model: str
    error: str | None
    """What went wrong, in words (never the secret)."""
