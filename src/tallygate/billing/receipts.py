"""Receipts: one row per /v1 request — successful, failed, streamed or cut off — written in the
same transaction as its settlement (or release), so a receipt and its ledger entry can never
disagree."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from tallygate.ledger.tx import Tx


@dataclass(slots=True)
class Receipt:
    request_id: str
    created_at: int
    user_id: int
    endpoint: str
    http_status: int = 200
    status: str = "ok"  # ok | failed | partial | rejected
    key_id: int | None = None
    key_label: str = ""
    project: str = ""
    model: str = ""
    api_model_id: str = ""
    upstream_model: str = ""
    route_type: str = ""
    bucket: str = ""
    currency: str = ""
    primary_channel: str = ""
    channel: str = ""
    backup_used: int = 0
    attempts_json: str = "[]"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    usage_basis: str = "none"  # upstream | estimated | none
    price_version_id: int | None = None
    input_per_m_nanos: int = 0
    output_per_m_nanos: int = 0
    cached_input_per_m_nanos: int = 0
    hold_nanos: int = 0
    charge_nanos: int = 0
    overrun_nanos: int = 0
    balance_after_nanos: int | None = None
    failure_class: str = ""
    charge_policy: str = ""
    entry_id: int | None = None
    error_code: str = ""
    error_message: str = ""
    latency_us: int = 0
    ttft_us: int | None = None
    streamed: int = 0
    client_disconnected: int = 0
    upstream_response_id: str | None = None
    channel_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_COLUMNS = [f.name for f in fields(Receipt) if f.name != "extra"]
_INSERT = (
    f"INSERT INTO receipts ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


_SETTLED = ("entry_id", "charge_nanos", "overrun_nanos", "balance_after_nanos")
_OWN = [name for name in _COLUMNS if name not in _SETTLED]
_CAST = {f.name: "bigint" if "int" in str(f.type) else "text" for f in fields(Receipt)}
_FROM_SETTLEMENT = (
    f"INSERT INTO receipts ({', '.join(_OWN)}, {', '.join(_SETTLED)}) "
    f"SELECT {', '.join(f'?::{_CAST[name]}' for name in _OWN)}, "
    "s.o_entry, s.charged, s.overrun, s.balance_after FROM s WHERE s.outcome = 'ok'"
)


def from_settlement(receipt: Receipt) -> tuple[str, tuple[Any, ...]]:
    """The receipt's INSERT over the PostgreSQL settlement row ``s`` (``Ledger.settle_hold``'s
    ``then``): its charge, overrun, balance after and entry come from the settlement itself."""
    return _FROM_SETTLEMENT, tuple(getattr(receipt, name) for name in _OWN)


def insert(tx: Tx, receipt: Receipt) -> None:
    tx.run(_INSERT, tuple(getattr(receipt, name) for name in _COLUMNS))


def get(tx: Tx, request_id: str) -> dict[str, Any] | None:
    row = tx.one(f"SELECT {', '.join(_COLUMNS)} FROM receipts WHERE request_id = ?", (request_id,))
    return dict(zip(_COLUMNS, row, strict=True)) if row else None
