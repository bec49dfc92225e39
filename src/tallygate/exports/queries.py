"""The exports' rows, streamed from the database (server-side cursors on PostgreSQL; SQLite
steps its cursor lazily) with lookups precomputed once, so memory stays flat in the row count."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, case, false, func, select, text

from tallygate.credits import repository as credits_repository
from tallygate.credits.service import REDEMPTION_COLUMNS as CAMPAIGN_REDEMPTION_COLUMNS
from tallygate.exports.formats import Col, iso
from tallygate.models.credits import redemptions
from tallygate.models.ledger import accounts, entries, lots, postings
from tallygate.payments.currency import minor_to_text
from tallygate.payments.repository import TAKEBACK_KINDS


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


@contextmanager
def _cursor(conn: Connection, sql: str, params: dict[str, Any]) -> Iterator[Any]:
    """The driver's own cursor on the connection's own transaction (so inside its snapshot),
    executed: a server-side (named) cursor on PostgreSQL, SQLite's lazily stepped cursor.
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
        yield cursor
    finally:
        cursor.close()


def _chunks(
    conn: Connection, sql: str, params: dict[str, Any], batch: int = 2000
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows as the driver's tuples, ``batch`` at a time (one round trip each on PostgreSQL)."""
    with _cursor(conn, sql, params) as cursor:
        while chunk := cursor.fetchmany(batch):
            yield chunk


def _stream(
    conn: Connection, sql: str, params: dict[str, Any], batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """Rows as dicts, fetched ``batch`` at a time."""
    with _cursor(conn, sql, params) as cursor:
        names = [d[0] for d in cursor.description]
        while chunk := cursor.fetchmany(batch):
            for values in chunk:
                yield dict(zip(names, values, strict=True))


# ---- requests -------------------------------------------------------------------------------

REQUEST_COLUMNS = [
    Col("request_id", doc="X-Request-Id of the request", distinct=True),
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


def _request_where(f: Filters) -> tuple[str, dict[str, Any]]:
    return _where(
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


def _request_lookups(
    conn: Connection,
) -> tuple[dict[int, str], dict[int, str], dict[str, tuple[int, str]]]:
    """User e-mails, key prefixes and request adjustments: they grow with users and keys."""
    emails = {int(i): str(e) for i, e in conn.execute(text("SELECT id, email FROM users"))}
    prefixes = {int(i): str(p) for i, p in conn.execute(text("SELECT id, prefix FROM api_keys"))}
    return emails, prefixes, _adjustments(conn)


def request_rows(conn: Connection, f: Filters) -> Iterator[dict[str, Any]]:
    where, params = _request_where(f)
    emails, prefixes, adjustments = _request_lookups(conn)
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


def _floor_ms(us: str) -> str:
    """``us // 1000`` in SQL (floor, as Python's; both databases' ``/`` truncates)."""
    return f"(({us}) - ((({us}) % 1000) + 1000) % 1000) / 1000"


def request_batches(conn: Connection, f: Filters) -> Iterator[list[tuple[Any, ...]]]:
    """The request export's rows as tuples in ``REQUEST_COLUMNS`` order, a fetch at a time:
    the CSV path (``formats.csv_batches``). The same values as ``request_rows`` (which the
    JSON Lines path uses: it also carries the attempts themselves), but the database hands
    them over ready: it joins e-mail and key prefix, counts the attempts, picks the backup
    channel and turns µs into ms, so a fetched row needs no work in Python; only the rare
    request an operator adjustment references is patched."""
    where, params = _request_where(f)
    pg = conn.dialect.name == "postgresql"
    attempts = (
        "COALESCE(json_array_length(NULLIF(r.attempts_json, '')::json), 0)"
        if pg
        else "CASE WHEN r.attempts_json = '' THEN 0 ELSE json_array_length(r.attempts_json) END"
    )
    fallbacks = f"{'GREATEST' if pg else 'MAX'}({attempts} - 1, 0)"
    sql = (
        "SELECT r.request_id, r.created_at, r.user_id, COALESCE(u.email, ''), r.project, "
        "r.key_label, COALESCE(k.prefix, ''), r.endpoint, r.model, r.api_model_id, "
        "r.upstream_model, r.route_type, r.primary_channel, "
        f"CASE WHEN r.backup_used <> 0 THEN r.channel ELSE '' END, {attempts}, {fallbacks}, "
        "r.input_tokens, r.output_tokens, r.cached_tokens, r.usage_basis, r.price_version_id, "
        "r.input_per_m_nanos, r.output_per_m_nanos, r.cached_input_per_m_nanos, "
        "r.charge_nanos, r.currency, r.bucket, r.balance_after_nanos, r.status, "
        "r.http_status, r.failure_class, r.charge_policy, r.entry_id, NULL, '', "
        f"{_floor_ms('r.latency_us')}, {_floor_ms('r.ttft_us')}, r.streamed, "
        "r.client_disconnected, r.error_code "
        "FROM receipts r LEFT JOIN users u ON u.id = r.user_id "
        "LEFT JOIN api_keys k ON k.id = r.key_id WHERE " + where + " ORDER BY r.created_at, r.id"
    )
    adjustments = _adjustments(conn)
    adjusted = adjustments.get
    at = REQUEST_COLUMNS.index(next(c for c in REQUEST_COLUMNS if c.name == "adjustment"))
    for chunk in _chunks(conn, sql, params):
        if adjustments:
            chunk = [
                row if (a := adjusted(row[0])) is None else (*row[:at], *a, *row[at + 2 :])
                for row in chunk
            ]
        yield chunk


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


def _merged(
    rows: Iterator[dict[str, Any]], details: Iterator[dict[str, Any]], key: str
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each row with its detail rows: both streams are ordered by ``key`` (the detail stream
    may hold keys no row has), so one pass over each keeps memory flat."""
    pending = next(details, None)
    for row in rows:
        own: list[dict[str, Any]] = []
        while pending is not None and pending[key] < row[key]:
            pending = next(details, None)
        while pending is not None and pending[key] == row[key]:
            own.append(pending)
            pending = next(details, None)
        yield row, own


# ---- top-ups --------------------------------------------------------------------------------

TOPUP_COLUMNS = [
    Col("order_id", doc="the order's public id (ord_…), the merchant reference sent to providers"),
    Col("created_at", "time", "when the order was created"),
    Col("paid_at", "time", "when the payment was credited (its ledger entry's time)"),
    Col("expires_at", "time", "end of the order's payment window"),
    Col("updated_at", "time"),
    Col("user_id", "int"),
    Col("user_email"),
    Col("bucket", doc="credit or routed"),
    Col("bucket_currency", doc="currency of the credited amounts"),
    Col("provider", doc="sandbox, stripe, wechat or bank"),
    Col("test_mode", "bool", "sandbox (test-mode) order: no money moved"),
    Col("provider_reference", doc="checkout session / out_trade_no at the provider"),
    Col("provider_payment_id", doc="the provider's payment (intent / transaction) id"),
    Col("transfer_reference", doc="bank transfers: the reference the user submitted"),
    Col("amount", "decimal", "amount asked, in the payment currency"),
    Col("currency", doc="payment currency"),
    Col("paid_amount", "decimal", "amount the provider reports as paid"),
    Col("paid_currency"),
    Col("rate", "decimal", "snapshot: bucket units per payment-currency unit"),
    Col("bonus_rate", "decimal", "snapshot: bonus fraction of the amount's tier"),
    Col("quoted", "money", "credit shown before paying (bucket currency)"),
    Col("credited", "money", "credit the payment bought (bucket currency)"),
    Col("debt_repaid", "money", "part of the credit that repaid debt on the bucket"),
    Col("balance_credited", "money", "part that reached the balance: credited − debt_repaid"),
    Col("balance_after", "money", "bucket balance right after the credit"),
    Col("status", doc="pending, processing, awaiting_review, paid, expired, canceled, …"),
    Col("status_reason"),
    Col("state_history", doc="status changes in order, each with its source"),
    Col("history_events", "int", "events in the order's history (refunds, disputes too)"),
    Col("paid_after_expiry", "bool"),
    Col("flag", doc="why the order needs an operator's eye, if it does"),
    Col("flag_detail"),
    Col("refund_state", doc="none, pending (a refund in flight), partial or full"),
    Col("refunded_amount", "decimal", "refunded so far, in the payment currency"),
    Col("dispute_state", doc="none, open, won or lost"),
    Col("entry_id", "int", "the top-up's ledger entry"),
    Col("lot_id", "int", "the lot the credit opened"),
    Col("lot_original", "money", "what the lot opened with"),
    Col("lot_used", "money", "what requests (and other spending) took from the lot"),
    Col("lot_taken_back", "money", "what refunds, disputes, reversals and expiry took back"),
    Col("lot_remaining", "money"),
]

# The lot draws that take credit back rather than spend it: payments' own definition.
_TAKEBACK = "(" + ", ".join(f"'{kind}'" for kind in TAKEBACK_KINDS) + ")"


def _minor_text(minor: Any, currency: Any) -> str | None:
    return None if minor is None or currency is None else minor_to_text(int(minor), str(currency))


def _order_where(f: Filters) -> tuple[str, dict[str, Any]]:
    """Orders fall in a period by when they were credited (their entry's time, as on the
    statement), orders never credited by when they were created."""
    return _where(
        f,
        "COALESCE(e.created_at, o.created_at)",
        {"user_id": "o.user_id", "bucket": "o.bucket", "status": "o.status", "kind": "o.provider"},
    )


def topup_rows(conn: Connection, f: Filters) -> Iterator[dict[str, Any]]:
    where, params = _order_where(f)
    sql = (
        "SELECT o.id AS oid, o.public_id AS order_id, o.created_at, e.created_at AS paid_at, "
        "o.expires_at, o.updated_at, o.user_id, u.email AS user_email, o.bucket, "
        "o.bucket_currency, o.provider, o.test_mode, o.provider_ref AS provider_reference, "
        "o.provider_payment_id, o.transfer_reference, o.amount_minor, o.currency, "
        "o.paid_minor, o.paid_currency, o.rate, o.bonus_rate, o.quoted_nanos AS quoted, "
        "o.credited_nanos AS credited, b.to_balance, b.to_debt, b.balance_after, o.status, "
        "o.status_reason, o.paid_after_expiry, o.flag, o.flag_detail, o.refund_state, "
        "o.refunded_minor, o.dispute_state, o.entry_id, o.lot_id, "
        "l.original_nanos AS lot_original, l.remaining_nanos AS lot_remaining, "
        "d.used AS lot_used, d.taken_back AS lot_taken_back "
        "FROM payment_orders o JOIN users u ON u.id = o.user_id "
        "LEFT JOIN entries e ON e.id = o.entry_id "
        "LEFT JOIN lots l ON l.id = o.lot_id "
        # the top-up entry's postings: what reached the bucket, what repaid debt
        "LEFT JOIN (SELECT p.entry_id, "
        "SUM(CASE WHEN a.kind = 'bucket' THEN a.normal * p.amount_nanos ELSE 0 END) AS to_balance, "
        "SUM(CASE WHEN a.kind = 'debt' THEN -a.normal * p.amount_nanos ELSE 0 END) AS to_debt, "
        "MAX(CASE WHEN a.kind = 'bucket' THEN p.balance_after_nanos END) AS balance_after "
        "FROM postings p JOIN accounts a ON a.id = p.account_id "
        "WHERE p.entry_id IN (SELECT entry_id FROM payment_orders WHERE entry_id IS NOT NULL) "
        "GROUP BY p.entry_id) b ON b.entry_id = o.entry_id "
        # what left the order's lot, spent or taken back
        "LEFT JOIN (SELECT p.lot_id, "
        f"SUM(CASE WHEN x.kind IN {_TAKEBACK} THEN 0 ELSE -p.amount_nanos END) AS used, "
        f"SUM(CASE WHEN x.kind IN {_TAKEBACK} THEN -p.amount_nanos ELSE 0 END) AS taken_back "
        "FROM postings p JOIN entries x ON x.id = p.entry_id WHERE p.amount_nanos < 0 "
        "AND p.lot_id IN (SELECT lot_id FROM payment_orders WHERE lot_id IS NOT NULL) "
        "GROUP BY p.lot_id) d ON d.lot_id = o.lot_id "
        "WHERE " + where + " ORDER BY o.id"
    )
    events_sql = (
        "SELECT ev.order_id AS oid, ev.at, ev.from_status, ev.to_status, ev.source, ev.detail "
        "FROM order_events ev WHERE ev.order_id IN (SELECT o.id FROM payment_orders o "
        "LEFT JOIN entries e ON e.id = o.entry_id WHERE " + where + ") "
        "ORDER BY ev.order_id, ev.id"
    )
    rows = _merged(_stream(conn, sql, params), _stream(conn, events_sql, params), "oid")
    for row, events in rows:
        credited = row["credited"]
        row["amount"] = _minor_text(row["amount_minor"], row["currency"])
        row["paid_amount"] = _minor_text(row["paid_minor"], row["paid_currency"])
        row["refunded_amount"] = _minor_text(row["refunded_minor"], row["currency"])
        if credited is not None:
            row["balance_credited"] = row["to_balance"] or 0
            row["debt_repaid"] = row["to_debt"] or 0
        if row["lot_id"] is not None:
            row["lot_used"] = row["lot_used"] or 0
            row["lot_taken_back"] = row["lot_taken_back"] or 0
        changes = [e for e in events if e["from_status"] != e["to_status"]]
        row["state_history"] = " > ".join(f"{e['to_status']} ({e['source']})" for e in changes)
        row["history_events"] = len(events)
        row["history"] = [
            {
                "at": iso(int(e["at"])),
                "from_status": e["from_status"],
                "to_status": e["to_status"],
                "source": e["source"],
                "detail": e["detail"],
            }
            for e in events
        ]
        yield row


# ---- refunds --------------------------------------------------------------------------------

REFUND_COLUMNS = [
    Col("refund_id", doc="the refund's public id (rf_…)"),
    Col("order_id", doc="the refunded top-up order"),
    Col("user_id", "int"),
    Col("user_email"),
    Col("bucket"),
    Col("bucket_currency"),
    Col("provider"),
    Col("provider_reference", doc="the order's payment id at the provider (else its checkout)"),
    Col("provider_refund_id", doc="the provider's refund id; empty for manual refunds"),
    Col("source", doc="who started it: admin (operator), manual, or webhook (the provider)"),
    Col("actor", doc="the operator or provider that started it"),
    Col("reason"),
    Col("shortfall_policy", doc="debt or review when part was not covered; empty otherwise"),
    Col("status", doc="requested, pending, succeeded, failed or canceled"),
    Col("amount", "decimal", "refunded, in the payment currency"),
    Col("currency", doc="payment currency"),
    Col("amount_converted", "money", "the refund at the order's rate, in the bucket currency"),
    Col("held", "money", "held in the bucket for it while the provider processes it"),
    Col("order_credited", "money", "what the order originally credited"),
    Col("credit_used", "money", "how much of the order's credit requests had used by then"),
    Col("credit_already_used", "bool"),
    Col("taken", "money", "taken from the balance when booked"),
    Col("debt", "money", "booked as debt when booked (policy debt)"),
    Col("shortfall", "money", "what the balance could not cover"),
    Col("shortfall_state", doc="none, debt, awaiting_decision, written_off or canceled"),
    Col("decision_reason", doc="the operator's reason when deciding a shortfall"),
    Col("balance_debited", "money", "Σ the refund's ledger entries on the balance"),
    Col("debt_booked", "money", "Σ the refund's ledger entries on the debt (incl. a decision)"),
    Col("recredited", "money", "given back after the provider failed the refund"),
    Col("written_off", "money", "shortfall forgiven by an operator (credited back)"),
    Col("balance_after", "money", "bucket balance right after booking"),
    Col("entry_id", "int", "the refund's debit entry"),
    Col("shortfall_entry_id", "int", "the entry of an operator's shortfall decision, if any"),
    Col("recredit_entry_id", "int", "the re-credit entry of a refund that failed"),
    Col("receipts", "json", "request ids that had drawn on the order's credit"),
    Col("idempotency_key", doc="our key: the provider's Idempotency-Key and the entry's"),
    Col("duplicates_suppressed", "int", "repeated provider announcements ignored"),
    Col("first_seen_at", "time"),
    Col("booked_at", "time", "when the debit was booked (its ledger entry's time)"),
    Col("updated_at", "time"),
]


def _policy(row: dict[str, Any]) -> str:
    """The shortfall policy is not stored on the record; its trace is: a shortfall that waits
    for, or got, an operator's decision (a decision needs a reason) means ``review``; debt
    standing without one means ``debt``; with nothing uncovered the policy did not matter."""
    if (
        row["decision_reason"]
        or row["shortfall_entry_id"] is not None
        or row["shortfall_state"] in ("awaiting_decision", "written_off", "canceled")
    ):
        return "review"
    if int(row["debt"] or 0) > 0 or row["shortfall_state"] == "debt":
        return "debt"
    return ""


def refund_rows(conn: Connection, f: Filters) -> Iterator[dict[str, Any]]:
    where, params = _where(
        f,
        "COALESCE(e.created_at, r.booked_at, r.first_seen_at)",
        {"user_id": "o.user_id", "bucket": "o.bucket", "status": "r.status", "kind": "r.source"},
    )
    sql = (
        "SELECT r.public_id AS refund_id, o.public_id AS order_id, o.user_id, "
        "u.email AS user_email, o.bucket, o.bucket_currency, r.provider, "
        "COALESCE(o.provider_payment_id, o.provider_ref) AS provider_reference, "
        "r.provider_refund_id, r.source, r.actor, r.reason, r.status, r.amount_minor, "
        "r.currency, r.amount_nanos AS amount_converted, r.held_nanos AS held, "
        "o.credited_nanos AS order_credited, "
        "r.credit_used_nanos AS credit_used, r.taken_nanos AS taken, r.debt_nanos AS debt, "
        "r.shortfall_nanos AS shortfall, r.shortfall_state, r.decision_reason, "
        "m.balance_debited, m.debt_booked, m.recredited, m.written_off, "
        "r.balance_after_nanos AS balance_after, r.entry_id, r.shortfall_entry_id, "
        "r.recredit_entry_id, r.receipts_json, r.idempotency_key, r.duplicates_suppressed, "
        "r.first_seen_at, e.created_at AS booked_at, r.updated_at "
        "FROM refunds r JOIN payment_orders o ON o.id = r.order_id "
        "JOIN users u ON u.id = o.user_id LEFT JOIN entries e ON e.id = r.entry_id "
        # every ledger entry the refund caused, on the user's balance and debt
        "LEFT JOIN (SELECT x.cause_id, "
        "SUM(CASE WHEN x.kind = 'refund' AND a.kind = 'bucket' "
        "THEN -a.normal * p.amount_nanos ELSE 0 END) AS balance_debited, "
        "SUM(CASE WHEN x.kind = 'refund' AND a.kind = 'debt' "
        "THEN a.normal * p.amount_nanos ELSE 0 END) AS debt_booked, "
        # a re-credit repays the debt it booked first, then credits the balance
        "SUM(CASE WHEN x.kind <> 'refund_failed' THEN 0 WHEN a.kind = 'bucket' "
        "THEN a.normal * p.amount_nanos ELSE -a.normal * p.amount_nanos END) AS recredited, "
        "SUM(CASE WHEN x.kind <> 'refund_write_off' THEN 0 WHEN a.kind = 'bucket' "
        "THEN a.normal * p.amount_nanos ELSE -a.normal * p.amount_nanos END) AS written_off "
        "FROM entries x JOIN postings p ON p.entry_id = x.id "
        "JOIN accounts a ON a.id = p.account_id "
        "WHERE x.cause_type = 'refund' AND a.kind IN ('bucket', 'debt') "
        "GROUP BY x.cause_id) m ON m.cause_id = r.public_id "
        "WHERE " + where + " ORDER BY r.id"
    )
    for row in _stream(conn, sql, params):
        used = row["credit_used"]
        row["amount"] = _minor_text(row["amount_minor"], row["currency"])
        row["shortfall_policy"] = _policy(row)
        row["credit_already_used"] = None if used is None else int(used) > 0
        for name in ("balance_debited", "debt_booked", "recredited", "written_off"):
            row[name] = row[name] or 0
        row["receipts"] = orjson.loads(row["receipts_json"] or "[]")
        yield row


# ---- redemptions ----------------------------------------------------------------------------

REDEMPTION_COLUMNS = [
    # The campaign CSV's columns first (the same query, credits.repository.redemptions_select),
    # so a campaign download and this export read alike.
    *CAMPAIGN_REDEMPTION_COLUMNS,
    Col("kind", doc="code (a redeem code) or starter (a new account's grant)"),
    Col("debt_repaid", "money", "part of the amount that repaid debt on the bucket"),
    Col("balance_credited", "money", "part that reached the balance: amount − debt_repaid"),
    Col("lot_original", "money", "what the lot opened with"),
    Col("lot_spent", "money", "what requests spent from the lot"),
    Col("lot_expired", "money", "what expired unspent"),
]


def redemption_rows(conn: Connection, f: Filters) -> Iterator[dict[str, Any]]:
    r, p, x, a = redemptions.c, postings.c, entries.c, accounts.c
    draws = (
        select(
            p.lot_id,
            func.sum(case((x.kind == "usage", -p.amount_nanos), else_=0)).label("spent"),
            func.sum(case((x.kind == "expiry", -p.amount_nanos), else_=0)).label("expired"),
        )
        .join(entries, x.id == p.entry_id)
        .where(p.amount_nanos < 0, p.lot_id.in_(select(r.lot_id).where(r.lot_id.is_not(None))))
        .group_by(p.lot_id)
        .subquery()
    )
    moved = (
        select(
            p.entry_id,
            func.sum(case((a.kind == "bucket", a.normal * p.amount_nanos), else_=0)).label("bal"),
            func.sum(case((a.kind == "debt", -a.normal * p.amount_nanos), else_=0)).label("debt"),
        )
        .join(accounts, a.id == p.account_id)
        .where(p.entry_id.in_(select(r.entry_id).where(r.entry_id.is_not(None))))
        .group_by(p.entry_id)
        .subquery()
    )
    at = func.coalesce(x.created_at, r.created_at)
    stmt = (
        credits_repository.redemptions_select()
        .add_columns(
            lots.c.original_nanos.label("lot_original"),
            draws.c.spent,
            draws.c.expired,
            moved.c.bal,
            moved.c.debt,
        )
        .outerjoin(entries, x.id == r.entry_id)
        .outerjoin(draws, draws.c.lot_id == r.lot_id)
        .outerjoin(moved, moved.c.entry_id == r.entry_id)
        .order_by(r.id)
    )
    if f.since_us is not None:
        stmt = stmt.where(at >= f.since_us)
    if f.until_us is not None:
        stmt = stmt.where(at < f.until_us)
    if f.user_id is not None:
        stmt = stmt.where(r.user_id == f.user_id)
    if f.bucket is not None:
        stmt = stmt.where(r.bucket == f.bucket)
    if f.kind is not None:  # code or starter; like any equality filter, another value matches none
        kinds = {"code": r.code_id.is_not(None), "starter": r.code_id.is_(None)}
        stmt = stmt.where(kinds.get(f.kind, false()))
    for m in conn.execute(stmt, execution_options={"yield_per": 1000}).mappings():
        row = dict(m)
        row["redemption_id"] = row["id"]
        row["campaign"] = row["campaign_name"]
        row["amount"] = row["amount_nanos"]
        row["remaining"] = row["remaining_nanos"]
        row["kind"] = "starter" if row["code_id"] is None else "code"
        if row["entry_id"] is not None:
            row["balance_credited"] = row["bal"] or 0
            row["debt_repaid"] = row["debt"] or 0
        if row["lot_id"] is not None:
            row["lot_spent"] = row["spent"] or 0
            row["lot_expired"] = row["expired"] or 0
        yield row


# Exports with a positional CSV path (``formats.csv_batches``): the large ones.
CSV_BATCHES: dict[str, Any] = {"requests": request_batches}

EXPORTS: dict[str, tuple[list[Col], Any, tuple[str, ...]]] = {
    "requests": (REQUEST_COLUMNS, request_rows, ("attempt_details",)),
    "ledger": (LEDGER_COLUMNS, ledger_rows, ()),
    "topups": (TOPUP_COLUMNS, topup_rows, ("history",)),
    "refunds": (REFUND_COLUMNS, refund_rows, ()),
    "redemptions": (REDEMPTION_COLUMNS, redemption_rows, ()),
    "audit": (AUDIT_COLUMNS, audit_rows, ()),
    "usage": (USAGE_COLUMNS, usage_rows, ()),
}
