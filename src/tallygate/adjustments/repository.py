"""Every SQL statement for adjustments (the ledger and receipts tables are only read)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, Select, insert, select

from tallygate.models.credits import adjustments
from tallygate.models.ledger import accounts, postings
from tallygate.models.receipts import receipts
from tallygate.models.users import users


def receipt(conn: Connection, request_id: str) -> RowMapping | None:
    stmt = select(receipts.c.request_id, receipts.c.user_id, receipts.c.bucket).where(
        receipts.c.request_id == request_id
    )
    return conn.execute(stmt).mappings().first()


def user_exists(conn: Connection, user_id: int) -> bool:
    return conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is not None


def insert_adjustment(conn: Connection, **values: Any) -> int:
    stmt = insert(adjustments).values(**values).returning(adjustments.c.id)
    return int(conn.execute(stmt).scalar_one())


def _select() -> Select[Any]:
    # The balance right after: the entry's last posting on a bucket account (a debit that
    # draws several lots posts once per lot; the last carries the final balance).
    balance_after = (
        select(postings.c.balance_after_nanos)
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(postings.c.entry_id == adjustments.c.entry_id, accounts.c.kind == "bucket")
        .order_by(postings.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return select(adjustments, balance_after.label("balance_after_nanos"))


def by_key(conn: Connection, idempotency_key: str) -> RowMapping | None:
    stmt = _select().where(adjustments.c.idempotency_key == idempotency_key)
    return conn.execute(stmt).mappings().first()


def page(
    conn: Connection,
    *,
    user_id: int | None,
    request_id: str | None,
    after_id: int | None,
    limit: int,
) -> list[RowMapping]:
    """Newest first, keyset-paginated on id."""
    stmt = _select().order_by(adjustments.c.id.desc()).limit(limit)
    if user_id is not None:
        stmt = stmt.where(adjustments.c.user_id == user_id)
    if request_id is not None:
        stmt = stmt.where(adjustments.c.request_id == request_id)
    if after_id is not None:
        stmt = stmt.where(adjustments.c.id < after_id)
    return list(conn.execute(stmt).mappings())
