"""Journal entries: claim an idempotency key, write balanced postings, read entries back."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from tallygate.errors import BadRequest, IdempotencyConflict
from tallygate.ledger.errors import InvalidAmount, UnbalancedEntry
from tallygate.ledger.tx import Tx


@dataclass(frozen=True, slots=True)
class Posting:
    account_id: int
    amount_nanos: int
    currency: str
    lot_id: int | None = None
    balance_after_nanos: int | None = None


@dataclass(slots=True)
class PostedEntry:
    """The outcome of a money-moving call. ``replayed`` is True when the idempotency key had
    already been used with the same request, and nothing new was written."""

    entry_id: int
    kind: str
    replayed: bool
    postings: list[Posting] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


RESERVED_PREFIXES = ("settle:", "expiry:")
"""Keys the ledger derives for its own entries; callers may not use them."""


def canonical(request: dict[str, Any]) -> str:
    return orjson.dumps(request, option=orjson.OPT_SORT_KEYS).decode()


def claim(
    tx: Tx,
    *,
    kind: str,
    key: str,
    request: dict[str, Any] | None,
    cause_type: str | None,
    cause_id: str | None,
    memo: str,
    now_us: int,
) -> int | None:
    """Insert the entry header under its unique idempotency key.

    Returns the new entry id, or None when the key already exists with the same request (the
    caller then replays). A concurrent writer of the same key blocks on the unique index until
    the first commits, then sees the row: one entry per key, whatever the interleaving."""
    if request is not None and key.startswith(RESERVED_PREFIXES):
        raise BadRequest(
            f"idempotency keys starting with {', '.join(RESERVED_PREFIXES)} are reserved "
            "for the ledger's own entries"
        )
    request_json = canonical(request) if request is not None else None
    row = tx.one(
        "INSERT INTO entries (kind, idempotency_key, request_json, cause_type, cause_id, memo, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        (kind, key, request_json, cause_type, cause_id, memo, now_us),
    )
    if row is not None:
        return int(row[0])
    existing = tx.one("SELECT request_json FROM entries WHERE idempotency_key = ?", (key,))
    assert existing is not None
    previous = orjson.loads(existing[0]) if existing[0] else {}
    if request is not None and previous != orjson.loads(request_json or "{}"):
        differs = sorted(
            name for name in set(previous) | set(request) if previous.get(name) != request.get(name)
        )
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used with a different request "
            f"(differs in: {', '.join(differs)})",
            details={"differs": differs},
        )
    return None


def exists(tx: Tx, key: str) -> bool:
    return tx.one("SELECT 1 FROM entries WHERE idempotency_key = ?", (key,)) is not None


def write_postings(tx: Tx, entry_id: int, postings: list[Posting]) -> None:
    check_balanced(postings)
    tx.many(
        "INSERT INTO postings (entry_id, account_id, amount_nanos, currency, lot_id, "
        "balance_after_nanos) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (entry_id, p.account_id, p.amount_nanos, p.currency, p.lot_id, p.balance_after_nanos)
            for p in postings
        ],
    )
    tx.point("after_postings_before_commit")


def check_balanced(postings: list[Posting]) -> None:
    if len(postings) < 2:
        raise UnbalancedEntry("an entry needs at least two postings")
    sums: dict[str, int] = defaultdict(int)
    for p in postings:
        if type(p.amount_nanos) is not int or p.amount_nanos == 0:
            raise InvalidAmount(
                f"posting amounts must be non-zero integers, got {p.amount_nanos!r}"
            )
        sums[p.currency] += p.amount_nanos
    off = {currency: total for currency, total in sums.items() if total != 0}
    if off:
        raise UnbalancedEntry(f"postings do not sum to zero per currency: {off}")


def load(tx: Tx, key: str) -> PostedEntry:
    row = tx.one("SELECT id, kind FROM entries WHERE idempotency_key = ?", (key,))
    assert row is not None, key
    postings = tx.all(
        "SELECT account_id, amount_nanos, currency, lot_id, balance_after_nanos FROM postings "
        "WHERE entry_id = ? ORDER BY id",
        (row[0],),
    )
    return PostedEntry(
        int(row[0]),
        str(row[1]),
        True,
        [Posting(int(a), int(n), str(c), lot, b) for a, n, c, lot, b in postings],
    )
