"""Per-key spend limits, enforced inside the hold's transaction.

A key's counters move with its holds: a hold reserves, a settlement turns the reservation into
spend (only what was charged), a release or expiry frees it. The check and the reservation are
one conditional UPDATE that also requires the key to be neither revoked nor expired — so a
revocation or a spent limit takes effect at once in every gateway process, with no cache."""

from __future__ import annotations

from tallygate.ledger.errors import KeyNotUsable, KeySpendLimit
from tallygate.ledger.tx import Tx


def utc_day(now_us: int) -> int:
    import datetime as dt

    d = dt.datetime.fromtimestamp(now_us // 1_000_000, dt.UTC)
    return d.year * 10000 + d.month * 100 + d.day


def reserve(
    tx: Tx, *, key_id: int, bucket: str, currency: str, amount: int, day: int, now_us: int
) -> None:
    """Reserve ``amount`` on the key's counters or raise (having written nothing)."""
    row = tx.one(
        "UPDATE key_spend SET total_reserved_nanos = total_reserved_nanos + ?, "
        "day_spent_nanos = CASE WHEN day = ? THEN day_spent_nanos ELSE 0 END, "
        "day_reserved_nanos = CASE WHEN day = ? THEN day_reserved_nanos ELSE 0 END + ?, "
        "day = ? "
        "WHERE key_id = ? AND bucket = ? "
        "AND (limit_total_nanos IS NULL "
        "     OR total_spent_nanos + total_reserved_nanos + ? <= limit_total_nanos) "
        "AND (limit_daily_nanos IS NULL OR (CASE WHEN day = ? THEN day_spent_nanos "
        "     + day_reserved_nanos ELSE 0 END) + ? <= limit_daily_nanos) "
        "AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = ? AND k.revoked_at IS NULL "
        "     AND (k.expires_at IS NULL OR k.expires_at > ?)) "
        "RETURNING id",
        (amount, day, day, amount, day, key_id, bucket, amount, day, amount, key_id, now_us),
    )
    if row is None:
        refuse(
            tx,
            key_id=key_id,
            bucket=bucket,
            currency=currency,
            amount=amount,
            day=day,
            now_us=now_us,
        )


def refuse(
    tx: Tx, *, key_id: int, bucket: str, currency: str, amount: int, day: int, now_us: int
) -> None:
    key = tx.one("SELECT revoked_at, expires_at FROM api_keys WHERE id = ?", (key_id,))
    if key is None or key[0] is not None:
        raise KeyNotUsable("this API key has been revoked")
    if key[1] is not None and int(key[1]) <= now_us:
        raise KeyNotUsable("this API key has expired")
    spend = tx.one(
        "SELECT limit_total_nanos, limit_daily_nanos, total_spent_nanos + total_reserved_nanos, "
        "CASE WHEN day = ? THEN day_spent_nanos + day_reserved_nanos ELSE 0 END "
        "FROM key_spend WHERE key_id = ? AND bucket = ?",
        (day, key_id, bucket),
    )
    if spend is None:
        raise KeyNotUsable(f"this API key has no spend settings for bucket {bucket}")
    limit_total, limit_daily, used_total, used_day = spend
    if limit_total is not None and int(used_total) + amount > int(limit_total):
        raise KeySpendLimit(bucket, currency, "total", int(limit_total), int(used_total))
    raise KeySpendLimit(bucket, currency, "daily", int(limit_daily), int(used_day))


def unreserve(tx: Tx, *, key_id: int, bucket: str, amount: int) -> None:
    """Undo a reservation made earlier in this same transaction (a later check refused)."""
    tx.run(
        "UPDATE key_spend SET total_reserved_nanos = total_reserved_nanos - ?, "
        "day_reserved_nanos = day_reserved_nanos - ? WHERE key_id = ? AND bucket = ?",
        (amount, amount, key_id, bucket),
    )


def resolve(tx: Tx, *, key_id: int, bucket: str, amount: int, charged: int, spend_day: int) -> None:
    """A hold of ``amount`` reserved on ``spend_day`` resolved with ``charged`` spent."""
    tx.run(
        "UPDATE key_spend SET total_reserved_nanos = total_reserved_nanos - ?, "
        "total_spent_nanos = total_spent_nanos + ?, "
        "day_reserved_nanos = CASE WHEN day = ? THEN day_reserved_nanos - ? "
        "  ELSE day_reserved_nanos END, "
        "day_spent_nanos = CASE WHEN day = ? THEN day_spent_nanos + ? ELSE day_spent_nanos END "
        "WHERE key_id = ? AND bucket = ?",
        (amount, charged, spend_day, amount, spend_day, charged, key_id, bucket),
    )
