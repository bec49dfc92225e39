from __future__ import annotations

from pydantic import BaseModel


class Attempt(BaseModel):
    channel: str
    status: int | None
    latency_ms: float
    error: str


class ReceiptOut(BaseModel):
    """One request's receipt. Money fields: ``*_nanos`` integers and exact decimal strings in
    ``currency``; prices are per million tokens."""

    request_id: str
    created_at: str
    endpoint: str
    status: str
    http_status: int
    key_id: int | None
    key_label: str
    project: str
    model: str
    api_model_id: str
    upstream_model: str
    route_type: str
    bucket: str
    currency: str
    primary_channel: str
    channel: str
    backup_used: bool
    attempts: list[Attempt]
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    usage_basis: str
    price_version_id: int | None
    input_price_per_m: str
    output_price_per_m: str
    cached_input_price_per_m: str
    hold_nanos: int
    charge_nanos: int
    charge: str
    balance_after_nanos: int | None
    balance_after: str | None
    failure_class: str
    charge_policy: str
    entry_id: int | None
    error_code: str
    error_message: str
    latency_ms: float
    ttft_ms: float | None
    streamed: bool
    client_disconnected: bool


class ReceiptPage(BaseModel):
    items: list[ReceiptOut]
    next_cursor: int | None


class RouteHealthOut(BaseModel):
    channel_id: int
    channel: str
    model: str
    requests: int
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    consecutive_failures: int
    circuit: str
    last_error: str
