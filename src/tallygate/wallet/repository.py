"""Read-only SQL over the ledger's tables for the wallet views (the ledger alone writes them)."""

from __future__ import annotations

from sqlalchemy import Connection, RowMapping, func, select

from tallygate.models.ledger import accounts, entries, lots, postings


def bucket_account(conn: Connection, user_id: int, bucket: str) -> RowMapping | None:
    """The user's bucket account: (id, currency, normal)."""
    stmt = select(accounts.c.id, accounts.c.currency, accounts.c.normal).where(
        accounts.c.user_id == user_id,
        accounts.c.bucket == bucket,
        accounts.c.kind == "bucket",
    )
    return conn.execute(stmt).mappings().first()


def history(
    conn: Connection,
    *,
    account_id: int,
    before_entry_id: int | None,
    kind: str | None,
    since_us: int | None,
    until_us: int | None,
    limit: int,
) -> list[RowMapping]:
    """One row per entry touching the account, newest first (by entry id, which is also the
    keyset: ``before_entry_id`` is the last id of the previous page).

    An entry may post several times to one account (one posting per lot drawn), so amounts are
    summed; ``balance_after`` is the account balance after the entry's last posting on it."""
    last_posting = (
        select(func.max(postings.c.id))
        .where(postings.c.entry_id == entries.c.id, postings.c.account_id == account_id)
        .correlate(entries)
        .scalar_subquery()
    )
    balance_after = (
        select(postings.c.balance_after_nanos)
        .where(postings.c.id == last_posting)
        .correlate(entries)
        .scalar_subquery()
    )
    stmt = (
        select(
            entries.c.id,
            entries.c.created_at,
            entries.c.kind,
            entries.c.cause_type,
            entries.c.cause_id,
            entries.c.memo,
            func.sum(postings.c.amount_nanos).label("amount_nanos"),
            balance_after.label("balance_after_nanos"),
        )
        .select_from(postings.join(entries, entries.c.id == postings.c.entry_id))
        .where(postings.c.account_id == account_id)
        .group_by(
            entries.c.id,
            entries.c.created_at,
            entries.c.kind,
            entries.c.cause_type,
            entries.c.cause_id,
            entries.c.memo,
        )
        .order_by(entries.c.id.desc())
        .limit(limit)
    )
    if before_entry_id is not None:
        stmt = stmt.where(postings.c.entry_id < before_entry_id)
    if kind is not None:
        stmt = stmt.where(entries.c.kind == kind)
    if since_us is not None:
        stmt = stmt.where(entries.c.created_at >= since_us)
    if until_us is not None:
        stmt = stmt.where(entries.c.created_at < until_us)
    return list(conn.execute(stmt).mappings())


def expiring_lots(conn: Connection, account_id: int, now_us: int) -> list[RowMapping]:
    """Lots of the account with something left and an expiry still ahead, soonest first, with
    the entry that opened each (its memo names the campaign)."""
    stmt = (
        select(
            lots.c.id,
            lots.c.kind,
            lots.c.original_nanos,
            lots.c.remaining_nanos,
            lots.c.expires_at,
            entries.c.id.label("entry_id"),
            entries.c.memo,
        )
        .join(entries, entries.c.id == lots.c.source_entry_id)
        .where(
            lots.c.account_id == account_id,
            lots.c.remaining_nanos > 0,
            lots.c.expires_at.is_not(None),
            lots.c.expires_at > now_us,
        )
        .order_by(lots.c.expires_at, lots.c.id)
    )
    return list(conn.execute(stmt).mappings())
