"""The audit trail: an append-only, hash-chained log of every operator or system action that
changes money or configuration.

Each event's hash covers its content and the previous event's hash. The single ``audit_head``
row (count, head hash) is updated in the same transaction as every append: its row lock
serialises concurrent appends so the chain cannot fork, and it lets ``verify`` detect the
deletion of the last event, which a chain alone cannot."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from tallygate.errors import BadRequest
from tallygate.ledger.tx import Tx

GENESIS = "0" * 64
SOURCES = ("operator", "user", "system", "webhook", "cli")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    created_at: int
    actor: str
    source: str
    action: str
    target: str
    before: Any
    after: Any
    reason: str
    prev_hash: str
    hash: str


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def event_hash(
    prev_hash: str,
    seq: int,
    created_at: int,
    actor: str,
    source: str,
    action: str,
    target: str,
    before_json: str | None,
    after_json: str | None,
    reason: str,
) -> str:
    material = orjson.dumps(
        [prev_hash, seq, created_at, actor, source, action, target, before_json, after_json, reason]
    )
    return hashlib.sha256(material).hexdigest()


def record(
    tx: Tx,
    *,
    now_us: int,
    actor: str,
    source: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEvent:
    """Append one event in the caller's transaction (it commits or rolls back with the change)."""
    if source not in SOURCES:
        raise BadRequest(f"unknown audit source {source!r}")
    # Takes the head row's lock first: concurrent appenders queue here, so each sees the
    # previous head and the chain stays linear.
    head = tx.one("UPDATE audit_head SET count = count + 1 WHERE id = 1 RETURNING count, head_hash")
    if head is None:
        raise RuntimeError("audit_head row is missing: run migrations")
    seq, prev = int(head[0]), str(head[1])
    before_json, after_json = _dump(before), _dump(after)
    digest = event_hash(
        prev, seq, now_us, actor, source, action, target, before_json, after_json, reason
    )
    tx.run(
        "INSERT INTO audit_events (seq, created_at, actor, source, action, target, before_json, "
        "after_json, reason, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, now_us, actor, source, action, target, before_json, after_json, reason, prev, digest),
    )
    tx.run("UPDATE audit_head SET head_hash = ? WHERE id = 1", (digest,))
    return AuditEvent(
        seq, now_us, actor, source, action, target, before, after, reason, prev, digest
    )


def verify(tx: Tx) -> list[str]:
    """Recompute the chain; return a readable problem per break (empty when intact)."""
    problems: list[str] = []
    head = tx.one("SELECT count, head_hash FROM audit_head WHERE id = 1")
    if head is None:
        return ["audit chain head row is missing"]
    count, head_hash = int(head[0]), str(head[1])
    rows = tx.all(
        "SELECT seq, created_at, actor, source, action, target, before_json, after_json, "
        "reason, prev_hash, hash FROM audit_events ORDER BY seq"
    )
    prev = GENESIS
    for expected_seq, row in enumerate(rows, start=1):
        seq = int(row[0])
        if seq != expected_seq:
            problems.append(f"audit event #{expected_seq} is missing (found #{seq} in its place)")
            break
        if str(row[9]) != prev:
            problems.append(f"audit event #{seq} does not link to the previous event")
        recomputed = event_hash(str(row[9]), seq, int(row[1]), *[row[i] for i in range(2, 9)])
        if recomputed != str(row[10]):
            problems.append(f"audit event #{seq} was altered: its hash does not match its content")
        prev = str(row[10])
    if len(rows) != count:
        problems.append(
            f"audit chain head counts {count} events but {len(rows)} are stored "
            "(events were deleted or inserted outside the log)"
        )
    elif prev != head_hash:
        problems.append("audit chain head hash does not match the last event")
    return problems


def list_events(tx: Tx, *, limit: int = 100, before_seq: int | None = None) -> list[AuditEvent]:
    rows = tx.all(
        "SELECT seq, created_at, actor, source, action, target, before_json, after_json, reason, "
        "prev_hash, hash FROM audit_events WHERE seq < ? ORDER BY seq DESC LIMIT ?",
        (before_seq if before_seq is not None else 2**62, limit),
    )
    return [_event(r) for r in rows]


def search(
    tx: Tx,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> list[AuditEvent]:
    """Events newest first, filtered: ``actor`` and ``target`` match a part of the field
    (case-insensitive), ``action`` an exact action or a prefix ending in ``.`` (``order.``);
    ``since_us`` inclusive, ``until_us`` exclusive; ``before_seq`` pages back."""
    where = ["seq < ?"]
    params: list[Any] = [before_seq if before_seq is not None else 2**62]
    if actor:
        where.append("LOWER(actor) LIKE ?")
        params.append("%" + _like(actor.lower()) + "%")
    if target:
        where.append("LOWER(target) LIKE ?")
        params.append("%" + _like(target.lower()) + "%")
    if action:
        if action.endswith("."):
            where.append("action LIKE ?")
            params.append(_like(action) + "%")
        else:
            where.append("action = ?")
            params.append(action)
    if since_us is not None:
        where.append("created_at >= ?")
        params.append(since_us)
    if until_us is not None:
        where.append("created_at < ?")
        params.append(until_us)
    rows = tx.all(
        "SELECT seq, created_at, actor, source, action, target, before_json, after_json, reason, "
        f"prev_hash, hash FROM audit_events WHERE {' AND '.join(where)} "
        "ORDER BY seq DESC LIMIT ?",
        (*params, limit),
    )
    return [_event(r) for r in rows]


def actions(tx: Tx) -> list[str]:
    """Every action recorded so far, for a filter's choices."""
    return [str(r[0]) for r in tx.all("SELECT DISTINCT action FROM audit_events ORDER BY action")]


def _like(text: str) -> str:
    """``text`` inside a LIKE pattern: a typed ``%`` matches one character, not any run (``_``
    already matches one character, itself included)."""
    return text.replace("%", "_")


def _event(r: Any) -> AuditEvent:
    return AuditEvent(
        int(r[0]),
        int(r[1]),
        str(r[2]),
        str(r[3]),
        str(r[4]),
        str(r[5]),
        orjson.loads(r[6]) if r[6] else None,
        orjson.loads(r[7]) if r[7] else None,
        str(r[8]),
        str(r[9]),
        str(r[10]),
    )
