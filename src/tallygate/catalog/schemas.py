"""Catalog bodies. Prices are per million tokens in the paying bucket's currency: as input,
exact decimal strings ("0.15"); as output, integer ``*_per_m_nanos`` plus the same value as an
exact decimal string. Never a float."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

RouteType = Literal["official", "routed"]
Bucket = Literal["credit", "routed"]


class ModelCreate(BaseModel):
    name: str = Field(max_length=200)
    """Public name: letters, digits and ``. _ / -``; no ``:`` (reserved for the API model id)."""
    description: str = Field(default="", max_length=4000)
    context_length: int
    """Tokens of context the model accepts."""
    output_cap: int
    """Most output tokens one request may produce (caps holds when no max_tokens is sent)."""
    enabled: bool = True


class ModelUpdate(BaseModel):
    description: str | None = Field(default=None, max_length=4000)
    context_length: int | None = None
    output_cap: int | None = None
    enabled: bool | None = None


class PricesIn(BaseModel):
    """Decimal strings per million tokens, in the paying bucket's currency."""

    input: str
    output: str
    cached_input: str | None = None
    """Defaults to the input price (no discount for cached prompt tokens)."""
    currency: str | None = None
    """Optional safety check: when given, it must be the paying bucket's currency."""


class OfferPut(PricesIn):
    enabled: bool | None = None
    """Offer the model on this route type (unchanged when omitted; new offers are enabled)."""


class Prices(BaseModel):
    input_per_m_nanos: int
    """Nano-units of the currency per million input tokens."""
    input_per_m: str
    output_per_m_nanos: int
    output_per_m: str
    cached_input_per_m_nanos: int
    cached_input_per_m: str


class OfferOut(BaseModel):
    route_type: RouteType
    api_model_id: str
    """What a client sends to choose this route explicitly: ``<model>:<route_type>``."""
    bucket: Bucket
    """The bucket that pays this route type."""
    currency: str
    enabled: bool
    price_version_id: int | None
    prices: Prices | None
    """Null until a price is set; an offer without a price cannot be used."""


class ModelOut(BaseModel):
    name: str
    description: str
    context_length: int
    output_cap: int
    enabled: bool
    created_at: dt.datetime
    offers: list[OfferOut]


class PriceVersionOut(BaseModel):
    id: int
    route_type: RouteType
    current: bool
    currency: str
    prices: Prices
    source: str
    """manual, sync or demo."""
    created_by: str
    created_at: dt.datetime


class PriceHistory(BaseModel):
    model: str
    versions: list[PriceVersionOut]
    """Newest first; versions are immutable."""


# ---- price-list sync --------------------------------------------------------------------------


class SyncSource(BaseModel):
    """Exactly one of ``document`` (the price list as JSON), ``text`` (a JSON or YAML file's
    contents) or ``url`` (fetched by the server: http or https)."""

    document: dict[str, Any] | None = None
    text: str | None = Field(default=None, max_length=5_000_000)
    url: str | None = Field(default=None, max_length=2000)


class SyncApply(SyncSource):
    diff_id: str = Field(max_length=64)
    """The ``diff_id`` of the preview the operator approved."""


class FieldChange(BaseModel):
    old: Any
    new: Any


class PriceChange(BaseModel):
    route_type: RouteType
    old: Prices | None
    """Null when the offer is new or had no price."""
    new: Prices


class ModelAdded(BaseModel):
    name: str
    description: str
    context_length: int
    output_cap: int
    prices: list[PriceChange]


class ModelChanged(BaseModel):
    name: str
    fields: dict[str, FieldChange]
    prices: list[PriceChange]


class NotInPriceList(BaseModel):
    """Kept as they are: the sync never deletes or disables anything."""

    name: str
    route_types: list[RouteType]
    whole_model: bool
    """True when the model itself is absent from the price list."""


class SyncDiff(BaseModel):
    diff_id: str
    """Hash of the price list and of the catalog state it was compared with: apply refuses it
    (409) when either changed since."""
    added: list[ModelAdded]
    changed: list[ModelChanged]
    unchanged: list[str]
    not_in_price_list: list[NotInPriceList]


class SyncResult(BaseModel):
    applied: SyncDiff
    audit_events: int
    """How many audit events the apply recorded (one per change)."""
