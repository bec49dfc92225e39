"""Exports as byte streams, each read inside one database snapshot that lives exactly as long
as the stream (so a download never mixes two states of the ledger)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from tallygate.db.engine import Database
from tallygate.errors import BadRequest, Forbidden
from tallygate.exports import formats
from tallygate.exports.queries import CSV_BATCHES, EXPORTS, LEDGER_COLUMNS, Filters, ledger_rows
from tallygate.exports.statement import statement
from tallygate.kit.clock import to_epoch_us

USER_EXPORTS = ("requests", "ledger", "topups", "refunds", "redemptions")
OPERATOR_EXPORTS = (*USER_EXPORTS, "audit", "usage")
FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def to_us(value: dt.datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return to_epoch_us(value)


def check(name: str, fmt: str, allowed: tuple[str, ...]) -> None:
    if name in OPERATOR_EXPORTS and name not in allowed:
        raise Forbidden(f"the {name} export is for operators only", param="name")
    if name not in allowed:
        raise BadRequest(
            f"unknown export {name!r}: expected one of {', '.join(allowed)}", param="name"
        )
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}", param="format")


def stream(db: Database, name: str, fmt: str, filters: Filters) -> Iterator[bytes]:
    columns, rows_of, extra = EXPORTS[name]
    with db.snapshot() as conn:
        if fmt == "csv" and name in CSV_BATCHES:
            yield from formats.csv_batches(columns, CSV_BATCHES[name](conn, filters))
        elif fmt == "csv":
            yield from formats.csv_lines(columns, rows_of(conn, filters))
        else:
            yield from formats.jsonl_lines(columns, rows_of(conn, filters), extra)


def statement_with_rows(
    db: Database,
    *,
    user_id: int,
    bucket: str,
    since_us: int | None,
    until_us: int | None,
    rows: bool,
) -> dict[str, Any]:
    """The statement, and optionally the ledger rows it sums, from one snapshot."""
    with db.snapshot() as conn:
        result = statement(
            conn, user_id=user_id, bucket=bucket, since_us=since_us, until_us=until_us
        ).as_dict()
        if rows:
            f = Filters(since_us=since_us, until_us=until_us, user_id=user_id, bucket=bucket)
            result["rows"] = [
                {c.name: formats.json_value(c, r.get(c.name)) for c in LEDGER_COLUMNS}
                for r in ledger_rows(conn, f)
            ]
    return result
