"""Lots: grants of spendable value inside a bucket, drawn in one documented order.

Draw order (DESIGN.md "lot"): priority ascending, then soonest expiry (no expiry last), then
promotional before paid, then oldest (id). Only the free part of a lot — remaining minus what
pending holds earmarked — can be earmarked, drawn by a direct debit, reversed or expired."""

from __future__ import annotations

from tallygate.ledger.tx import Tx

DRAW_ORDER = (
    "priority, (expires_at IS NULL), expires_at, (CASE WHEN kind = 'promo' THEN 0 ELSE 1 END), id"
)

Draw = tuple[int, int]  # (lot id, nano-units)


def free_lots(tx: Tx, account_id: int) -> list[Draw]:
    rows = tx.all(
        "SELECT id, remaining_nanos - earmarked_nanos FROM lots "
        "WHERE account_id = ? AND remaining_nanos > 0 AND remaining_nanos > earmarked_nanos "
        f"ORDER BY {DRAW_ORDER}",
        (account_id,),
    )
    return [(int(lot_id), int(free)) for lot_id, free in rows]


def plan(lots: list[Draw], amount: int, first: int | None = None) -> list[Draw]:
    """Split ``amount`` over free lots in draw order (``first`` lot taken before the rest).

    Returns fewer nano-units than asked only when the lots do not hold enough."""
    ordered = sorted(lots, key=lambda lot: lot[0] != first) if first is not None else lots
    draws: list[Draw] = []
    left = amount
    for lot_id, free in ordered:
        if left <= 0:
            break
        take = min(free, left)
        if take > 0:
            draws.append((lot_id, take))
            left -= take
    return draws


def earmark(tx: Tx, draws: list[Draw]) -> None:
    for lot_id, amount in draws:
        tx.run(
            "UPDATE lots SET earmarked_nanos = earmarked_nanos + ? WHERE id = ?", (amount, lot_id)
        )


def take_free(tx: Tx, draws: list[Draw]) -> None:
    """Remove un-earmarked value from lots (direct debits, reversals, expiry)."""
    for lot_id, amount in draws:
        tx.run(
            "UPDATE lots SET remaining_nanos = remaining_nanos - ? WHERE id = ?", (amount, lot_id)
        )


def encode_earmarks(draws: list[Draw]) -> str:
    return ",".join(f"{lot_id}:{amount}" for lot_id, amount in draws)


def decode_earmarks(text: str) -> list[Draw]:
    if not text:
        return []
    result: list[Draw] = []
    for part in text.split(","):
        lot_id, amount = part.split(":")
        result.append((int(lot_id), int(amount)))
    return result


def open_lot(
    tx: Tx,
    *,
    account_id: int,
    entry_id: int,
    kind: str,
    amount: int,
    priority: int,
    expires_at: int | None,
    now_us: int,
) -> int:
    row = tx.one(
        "INSERT INTO lots (account_id, source_entry_id, kind, priority, original_nanos, "
        "remaining_nanos, earmarked_nanos, expires_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?) RETURNING id",
        (account_id, entry_id, kind, priority, amount, amount, expires_at, now_us),
    )
    assert row is not None
    return int(row[0])
