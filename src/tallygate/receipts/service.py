"""Receipts as users and operators read them."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection

from tallygate.billing.receipts import _COLUMNS
from tallygate.errors import NotFound
from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import to_decimal_string
from tallygate.ledger import Ledger
from tallygate.receipts.schemas import Attempt, ReceiptOut, ReceiptPage

_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM receipts"


def _out(row: dict[str, Any]) -> ReceiptOut:
    balance = row["balance_after_nanos"]
    return ReceiptOut(
        request_id=row["request_id"],
        created_at=from_epoch_us(int(row["created_at"])).isoformat().replace("+00:00", "Z"),
        endpoint=row["endpoint"],
        status=row["status"],
        http_status=int(row["http_status"]),
        key_id=row["key_id"],
        key_label=row["key_label"],
        project=row["project"],
        model=row["model"],
        api_model_id=row["api_model_id"],
        upstream_model=row["upstream_model"],
        route_type=row["route_type"],
        bucket=row["bucket"],
        currency=row["currency"],
        primary_channel=row["primary_channel"],
        channel=row["channel"],
        backup_used=bool(row["backup_used"]),
        attempts=[Attempt(**a) for a in orjson.loads(row["attempts_json"] or "[]")],
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cached_tokens=int(row["cached_tokens"]),
        usage_basis=row["usage_basis"],
        price_version_id=row["price_version_id"],
        input_price_per_m=to_decimal_string(int(row["input_per_m_nanos"])),
        output_price_per_m=to_decimal_string(int(row["output_per_m_nanos"])),
        cached_input_price_per_m=to_decimal_string(int(row["cached_input_per_m_nanos"])),
        hold_nanos=int(row["hold_nanos"]),
        charge_nanos=int(row["charge_nanos"]),
        charge=to_decimal_string(int(row["charge_nanos"])),
        balance_after_nanos=balance,
        balance_after=to_decimal_string(int(balance)) if balance is not None else None,
        failure_class=row["failure_class"],
        charge_policy=row["charge_policy"],
        entry_id=row["entry_id"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        latency_ms=int(row["latency_us"]) / 1000,
        ttft_ms=int(row["ttft_us"]) / 1000 if row["ttft_us"] is not None else None,
        streamed=bool(row["streamed"]),
        client_disconnected=bool(row["client_disconnected"]),
    )


def get(conn: Connection, ledger: Ledger, request_id: str, user_id: int | None) -> ReceiptOut:
    """A receipt by request id; ``user_id`` restricts it to its owner (404 otherwise)."""
    row = ledger.tx(conn).one(_SELECT + " WHERE request_id = ?", (request_id,))
    if row is None:
        raise NotFound(f"no receipt for request {request_id}")
    data = dict(zip(["id", *_COLUMNS], row, strict=True))
    if user_id is not None and data["user_id"] != user_id:
        raise NotFound(f"no receipt for request {request_id}")
    return _out(data)


def page(
    conn: Connection,
    ledger: Ledger,
    *,
    user_id: int | None,
    status: str | None,
    model: str | None,
    cursor: int | None,
    limit: int,
) -> ReceiptPage:
    where: list[str] = ["id < ?"]
    params: list[object] = [cursor if cursor is not None else 2**62]
    if user_id is not None:
        where.append("user_id = ?")
        params.append(user_id)
    if status:
        where.append("status = ?")
        params.append(status)
    if model:
        where.append("model = ?")
        params.append(model)
    rows = ledger.tx(conn).all(
        _SELECT + f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", (*params, limit + 1)
    )
    items = [_out(dict(zip(["id", *_COLUMNS], r, strict=True))) for r in rows[:limit]]
    next_cursor = int(rows[limit - 1][0]) if len(rows) > limit else None
    return ReceiptPage(items=items, next_cursor=next_cursor)
