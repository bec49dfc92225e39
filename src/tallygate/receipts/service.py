"""Receipts as users and operators read them."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Filter:
    """Which receipts: equality filters and a half-open time range [since_us, until_us)."""

    user_id: int | None = None
    status: str | None = None
    model: str | None = None
    key_id: int | None = None
    project: str | None = None
    route_type: str | None = None
    since_us: int | None = None
    until_us: int | None = None

    def where(self) -> tuple[list[str], list[object]]:
        where: list[str] = []
        params: list[object] = []
        for column in ("user_id", "status", "model", "key_id", "project", "route_type"):
            value = getattr(self, column)
            if value is not None and value != "":
                where.append(f"{column} = ?")
                params.append(value)
        if self.since_us is not None:
            where.append("created_at >= ?")
            params.append(self.since_us)
        if self.until_us is not None:
            where.append("created_at < ?")
            params.append(self.until_us)
        return where, params


def page(
    conn: Connection,
    ledger: Ledger,
    *,
    user_id: int | None,
    status: str | None,
    model: str | None,
    cursor: int | None,
    limit: int,
    key_id: int | None = None,
    project: str | None = None,
    route_type: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
) -> ReceiptPage:
    """Receipts newest first, filtered; the time range is half-open [since_us, until_us)."""
    f = Filter(user_id, status, model, key_id, project, route_type, since_us, until_us)
    where, params = f.where()
    where.insert(0, "id < ?")
    params.insert(0, cursor if cursor is not None else 2**62)
    rows = ledger.tx(conn).all(
        _SELECT + f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", (*params, limit + 1)
    )
    items = [_out(dict(zip(["id", *_COLUMNS], r, strict=True))) for r in rows[:limit]]
    next_cursor = int(rows[limit - 1][0]) if len(rows) > limit else None
    return ReceiptPage(items=items, next_cursor=next_cursor)


DAY_US = 86_400_000_000


@dataclass(frozen=True, slots=True)
class DailySpend:
    """Charged on one UTC day (``day_us``: its midnight, epoch µs) from one bucket by one model."""

    day_us: int
    bucket: str
    currency: str
    model: str
    charge_nanos: int
    requests: int


def daily_spend(conn: Connection, ledger: Ledger, f: Filter) -> list[DailySpend]:
    """Charges summed per UTC day, bucket and model, for the receipts ``f`` selects (exact
    integers; days without a charge are absent)."""
    where, params = f.where()
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = ledger.tx(conn).all(
        f"SELECT created_at / {DAY_US} AS day, bucket, currency, model, SUM(charge_nanos), "
        f"COUNT(*) FROM receipts{clause} GROUP BY created_at / {DAY_US}, bucket, currency, model "
        "ORDER BY day, bucket, model",
        tuple(params),
    )
    return [
        DailySpend(int(day) * DAY_US, str(bucket), str(currency), str(model), int(total), int(n))
        for day, bucket, currency, model, total, n in rows
    ]
