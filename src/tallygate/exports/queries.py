"""The exports' rows, streamed from the database (server-side cursors on PostgreSQL; SQLite
steps its cursor lazily) with lookups precomputed once, so memory stays flat in the row count."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, text

from tallygate.exports.formats import Col


@dataclass(frozen=True)
class Filters:
    """Half-open time range [since, until) in epoch µs, plus equality filters."""

    since_us: int | None = None
    until_us: int | None = None
    user_id: int | None = None
    key_id: int | None = None
    project: str | None = None
    model: str | None = None
    route_type: str | None = None
    status: str | None = None
    bucket: str | None = None
    kind: str | None = None


def _where(f: Filters, time_col: str, mapping: dict[str, str]) -> tuple[str, dict[str, Any]]:
    clauses, params = ["1 = 1"], {}
    if f.since_us is not None:
        clauses.append(f"{time_col} >= :since")
        params["since"] = f.since_us
    if f.until_us is not None:
        clauses.append(f"{time_col} < :until")
        params["until"] = f.until_us
    for field_name, column in mapping.items():
        value = getattr(f, field_name)
        if value is not None:
            clauses.append(f"{column} = :{field_name}")
            params[field_name] = value
    return " AND ".join(clauses), params


def _stream(
    conn: Connection, sql: str, params: dict[str, Any], batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """Rows as dicts, fetched ``batch`` at a time straight from the driver's cursor on the
    connection's own transaction (so inside its snapshot): a server-side (named) cursor on
    PostgreSQL (fetched ``batch`` rows per round trip), SQLite's lazily stepped cursor.
    SQLAlchemy's result layer is skipped: per row it cost more than the rest of the export."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    if conn.dialect.name == "postgresql":
        cursor = raw.cursor(name=f"export_{secrets.token_hex(6)}")
        sql = re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql.replace("%", "%%"))
    else:
        cursor = raw.cursor()
    try:
        cursor.execute(sql, params)
        names = [d[0] for d in cursor.description]
        while True:
            chunk = cursor.fetchmany(batch)
            if not chunk:
                return
            for values in chunk:
                yield dict(zip(names, values, strict=True))
    finally:
        cursor.close()


# ---- requests -------------------------------------------------------------------------------

REQUEST_COLUMNS = [
    Col("request_id", doc="X-Request-Id of the request"),
    Col("created_at", "time", "when the request arrived (UTC)"),
    Col("user_id", "int"),
    Col("user_email"),
    Col("project", doc="the API key's project label"),
    Col("key_label"),
    Col("key_prefix", doc="the visible start of the API key"),
    Col("endpoint", doc="chat, completions, embeddings or responses"),
    Col("model", doc="public model name"),
    Col("api_model_id", doc="the model id the client sent (may carry :official / :routed)"),
    Col("upstream_model", doc="the model id the channel received"),
    Col("route_type", doc="official or routed"),
    Col("primary_channel", doc="public label of the first channel tried"),
    Col("backup_channel", doc="public label of the channel that answered, when it was a backup"),
    Col("attempts", "int", "upstream attempts made"),
    Col("fallbacks", "int", "attempts beyond the first (retries and fallbacks)"),
    Col("input_tokens", "int"),
    Col("output_tokens", "int"),
    Col("cached_tokens", "int"),
    Col("usage_basis", doc="upstream (reported), estimated (counted locally) or none"),
    Col("price_version_id", "int"),
    Col("input_price_per_m", "money", "applied input price per million tokens"),
    Col("output_price_per_m", "money", "applied output price per million tokens"),
    Col("cached_input_price_per_m", "money"),
    Col("charge", "money", "final charge"),
    Col("currency"),
    Col("bucket", doc="paying bucket: credit or routed"),
    Col("balance_after", "money", "bucket balance right after the charge"),
    Col("status", doc="ok, partial, failed or rejected"),
    Col("http_status", "int"),
    Col("failure_class", doc="rejected, upstream_error, empty_output, client_abort, broken_stream"),
    Col("charge_policy", doc="the charge policy that applied, e.g. client_abort:charge_received"),
    Col("entry_id", "int", "the wallet ledger entry of the charge"),
    Col("adjustment", "money", "sum of operator adjustments that reference this request"),
    Col("adjustment_reason"),
    Col("latency_ms", "int"),
    Col("ttft_ms", "int", "time to first token (streams)"),
    Col("streamed", "bool"),
    Col("client_disconnected", "bool"),
    Col("error_code"),
]


def request_rows(conn: Connection, f: Filters) -> Iterator[dict[str, Any]]:
    where, params = _where(
        f,
        "r.created_at",
        {
            "user_id": "r.user_id",
            "key_id": "r.key_id",
            "project": "r.project",
            "model": "r.model",
            "route_type": "r.route_type",
            "status": "r.status",
            "bucket": "r.bucket",
        },
    )
    emails = {int(i): str(e) for i, e in conn.execute(text("SELECT id, email FROM users"))}
    prefixes = {int(i): str(p) for i, p in conn.execute(text("SELECT id, prefix FROM api_keys"))}
    adjustments = _adjustments(conn)
    sql = (
        "SELECT r.request_id, r.created_at, r.user_id, r.project, r.key_label, r.key_id, "
        "r.endpoint, r.model, r.api_model_id, r.upstream_model, r.route_type, "
        "r.primary_channel, r.channel, r.backup_used, r.attempts_json, r.input_tokens, "
        "r.output_tokens, r.cached_tokens, r.usage_basis, r.price_version_id, "
        "r.input_per_m_nanos AS input_price_per_m, r.output_per_m_nanos AS output_price_per_m, "
        "r.cached_input_per_m_nanos AS cached_input_price_per_m, r.charge_nanos AS charge, "
        "r.currency, r.bucket, r.balance_after_nanos AS balance_after, r.status, "
        "r.http_status, r.failure_class, r.charge_policy, r.entry_id, r.latency_us, r.ttft_us, "
        "r.streamed, r.client_disconnected, r.error_code FROM receipts r WHERE "
        + where
        + " ORDER BY r.created_at, r.id"
    )
    for row in _stream(conn, sql, params):
        attempts = orjson.loads(row["attempts_json"] or "[]")
        adjustment = adjustments.get(row["request_id"])
        key_id = row["key_id"]
        ttft = row["ttft_us"]
        row["user_email"] = emails.get(row["user_id"], "")
        row["key_prefix"] = prefixes.get(key_id, "") if key_id else ""
        row["backup_channel"] = row["channel"] if row["backup_used"] else ""
        row["attempts"] = len(attempts)
        row["fallbacks"] = max(len(attempts) - 1, 0)
        row["adjustment"] = adjustment[0] if adjustment else None
        row["adjustment_reason"] = adjustment[1] if adjustment else ""
        row["latency_ms"] = row["latency_us"] // 1000
        row["ttft_ms"] = ttft // 1000 if ttft is not None else None
        row["attempt_details"] = attempts
        yield row


def _adjustments(conn: Connection) -> dict[str, tuple[int, str]]:
    """Operator adjustments that point at a request: user-side amount and reason. A request is
    named by cause type ``request`` (the ledger's own convention, as on usage entries);
    ``receipt`` is accepted too."""
    found: dict[str, tuple[int, str]] = {}
    rows = conn.execute(
        text(
            "SELECT e.cause_id, e.memo, SUM(p.amount_nanos) FROM entries e "
            "JOIN postings p ON p.entry_id = e.id JOIN accounts a ON a.id = p.account_id "
            "WHERE e.kind = 'adjustment' AND e.cause_type IN ('request', 'receipt') "
            "AND a.kind = 'bucket' "
            "GROUP BY e.id, e.cause_id, e.memo ORDER BY e.id"
        )
    )
    for request_id, memo, amount in rows:
        previous = found.get(str(request_id))
        reason = str(memo or "")
        if previous:
            found[str(request_id)] = (previous[0] + int(amount), previous[1] + "; " + reason)
        else:
            found[str(request_id)] = (int(amount), reason)
    return found


# ---- wallet ledger --------------------------------------------------------------------------

LEDGER_COLUMNS = [
    Col("entry_id", "int"),
    Col("posting_id", "int", "one row per posting; an entry drawing several lots has several"),
    Col("created_at", "time"),
    Col("user_id", "int"),
    Col("kind", doc="topup, refund, reversal, redeem, grant, adjustment, usage, expiry, …"),
    Col("bucket", doc="credit or routed"),
    Col("account", doc="bucket (spendable balance) or debt (what is owed on that bucket)"),
    Col("amount", "money", "signed change of that account's balance"),
    Col("currency"),
    Col("balance_after", "money", "that account's balance right after this posting"),
    Col("cause_type", doc="what caused the entry: order, refund, code, request, lot, …"),
    Col("cause_id"),
    Col("lot_id", "int", "the lot this posting opened or drew from"),
    Col("memo"),
]


def ledger_rows(conn: Connection, f: Filters) -> Iterator[dict[str, Any]]:
    where, params = _where(
        f, "e.created_at", {"user_id": "a.user_id", "bucket": "a.bucket", "kind": "e.kind"}
    )
    sql = (
        "SELECT e.id AS entry_id, p.id AS posting_id, e.created_at, a.user_id, e.kind, "
        "a.bucket, a.kind AS account, a.normal, p.amount_nanos, p.currency, "
        "p.balance_after_nanos, e.cause_type, e.cause_id, p.lot_id, e.memo "
        "FROM postings p JOIN entries e ON e.id = p.entry_id "
        "JOIN accounts a ON a.id = p.account_id "
        "WHERE a.kind IN ('bucket', 'debt') AND " + where + " ORDER BY e.id, p.id"
    )
    for row in _stream(conn, sql, params):
        row["amount"] = int(row["normal"]) * int(row["amount_nanos"])
        row["balance_after"] = row["balance_after_nanos"]
        yield row


# ---- audit trail ----------------------------------------------------------------------------

AUDIT_COLUMNS = [
    Col("seq", "int"),
    Col("created_at", "time"),
    Col("actor"),
    Col("source", doc="operator, user, system, webhook or cli"),
    Col("action"),
    Col("target"),
    Col("reason"),
    Col("before"),
    Col("after"),
    Col("hash", doc="this event's chain hash"),
]


def audit_rows(conn: Connection, f: Filters) -> Iterator[dict[str, Any]]:
    where, params = _where(f, "created_at", {})
    sql = "SELECT * FROM audit_events WHERE " + where + " ORDER BY seq"
    for row in _stream(conn, sql, params):
        row["before"] = row["before_json"] or ""
        row["after"] = row["after_json"] or ""
        yield row


# ---- usage report ---------------------------------------------------------------------------

USAGE_COLUMNS = [
    Col("model"),
    Col("route_type"),
    Col("channel", doc="public label of the channel that answered"),
    Col("project"),
    Col("currency"),
    Col("requests", "int"),
    Col("succeeded", "int"),
    Col("failed", "int", "failed, partial and rejected requests"),
    Col("input_tokens", "int"),
    Col("output_tokens", "int"),
    Col("charge", "money"),
]


def usage_rows(conn: Connection, f: Filters) -> Iterator[dict[str, Any]]:
    where, params = _where(
        f,
        "created_at",
        {
            "user_id": "user_id",
            "key_id": "key_id",
            "project": "project",
            "model": "model",
            "route_type": "route_type",
            "bucket": "bucket",
        },
    )
    sql = (
        "SELECT model, route_type, channel, project, currency, COUNT(*) AS requests, "
        "SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END) AS succeeded, "
        "SUM(CASE WHEN status = 'ok' THEN 0 ELSE 1 END) AS failed, "
        "SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, "
        "SUM(charge_nanos) AS charge FROM receipts WHERE "
        + where
        + " GROUP BY model, route_type, channel, project, currency "
        "ORDER BY model, route_type, channel, project, currency"
    )
    yield from _stream(conn, sql, params)


EXPORTS: dict[str, tuple[list[Col], Any, tuple[str, ...]]] = {
    "requests": (REQUEST_COLUMNS, request_rows, ("attempt_details",)),
    "ledger": (LEDGER_COLUMNS, ledger_rows, ()),
    "audit": (AUDIT_COLUMNS, audit_rows, ()),
    "usage": (USAGE_COLUMNS, usage_rows, ()),
}
