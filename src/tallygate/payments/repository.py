"""Every SQL statement for orders, their history and refunds (SQLAlchemy Core, both databases)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, or_, select, update

from tallygate.models.ledger import entries, holds, lots, postings
from tallygate.models.payments import order_events, payment_orders, refunds

OC = payment_orders.c


def insert_order(conn: Connection, **values: Any) -> int:
    return int(conn.execute(insert(payment_orders).values(**values).returning(OC.id)).scalar_one())


def order_by_public_id(conn: Connection, public_id: str) -> RowMapping | None:
    return conn.execute(select(payment_orders).where(OC.public_id == public_id)).mappings().first()


def order_by_ref(conn: Connection, provider: str, ref: str) -> RowMapping | None:
    stmt = select(payment_orders).where(OC.provider == provider, OC.provider_ref == ref)
    return conn.execute(stmt).mappings().first()


def lock_order(conn: Connection, order_id: int) -> RowMapping:
    """The order row, locked until commit (PostgreSQL; SQLite writers are serialised): every
    change to an order and its money happens under this lock, so concurrent deliveries of
    events for one order apply one after the other."""
    stmt = select(payment_orders).where(OC.id == order_id).with_for_update()
    return conn.execute(stmt).mappings().one()


def update_order(conn: Connection, order_id: int, **values: Any) -> None:
    conn.execute(update(payment_orders).where(OC.id == order_id).values(**values))


def list_orders(
    conn: Connection, *, user_id: int | None, status: str | None, before_id: int | None, limit: int
) -> list[RowMapping]:
    stmt = select(payment_orders).order_by(OC.id.desc()).limit(limit)
    if user_id is not None:
        stmt = stmt.where(OC.user_id == user_id)
    if status is not None:
        stmt = stmt.where(OC.status == status)
    if before_id is not None:
        stmt = stmt.where(OC.id < before_id)
    return list(conn.execute(stmt).mappings())


def due_orders(conn: Connection, now_us: int, limit: int) -> list[int]:
    """Pending or awaiting-review orders past their expiry ('processing' never expires here:
    only the provider ends it; nor does an order flagged ``amount_mismatch``, which waits for
    an operator)."""
    stmt = (
        select(OC.id)
        .where(
            OC.status.in_(("pending", "awaiting_review")),
            OC.expires_at <= now_us,
            or_(OC.flag.is_(None), OC.flag != "amount_mismatch"),
        )
        .order_by(OC.id)
        .limit(limit)
    )
    return [int(i) for i in conn.execute(stmt).scalars()]


def add_event(
    conn: Connection,
    order_id: int,
    *,
    at: int,
    from_status: str | None,
    to_status: str,
    source: str,
    detail: str = "",
) -> None:
    conn.execute(
        insert(order_events).values(
            order_id=order_id,
            at=at,
            from_status=from_status,
            to_status=to_status,
            source=source,
            detail=detail,
        )
    )


def events_of(conn: Connection, order_id: int) -> list[RowMapping]:
    stmt = select(order_events).where(order_events.c.order_id == order_id)
    return list(conn.execute(stmt.order_by(order_events.c.id)).mappings())


# ---- refunds ----------------------------------------------------------------------------------

R = refunds.c


def insert_refund(conn: Connection, **values: Any) -> int:
    return int(conn.execute(insert(refunds).values(**values).returning(R.id)).scalar_one())


def refund_by(conn: Connection, **where: Any) -> RowMapping | None:
    stmt = select(refunds)
    for name, value in where.items():
        stmt = stmt.where(R[name] == value)
    return conn.execute(stmt).mappings().first()


def refunds_of(conn: Connection, order_id: int) -> list[RowMapping]:
    stmt = select(refunds).where(R.order_id == order_id).order_by(R.id)
    return list(conn.execute(stmt).mappings())


def update_refund(conn: Connection, refund_id: int, **values: Any) -> None:
    conn.execute(update(refunds).where(R.id == refund_id).values(**values))


def list_refunds(
    conn: Connection, *, shortfall_state: str | None, before_id: int | None, limit: int
) -> list[RowMapping]:
    stmt = select(refunds).order_by(R.id.desc()).limit(limit)
    if shortfall_state is not None:
        stmt = stmt.where(R.shortfall_state == shortfall_state)
    if before_id is not None:
        stmt = stmt.where(R.id < before_id)
    return list(conn.execute(stmt).mappings())


# ---- the order's lot: was it used, and by which receipts ---------------------------------------

TAKEBACK_KINDS = ("refund", "dispute", "reversal", "expiry")


def lot_usage(conn: Connection, lot_id: int) -> tuple[int, int, int, list[str]]:
    """(original, remaining, used, request ids) of a lot. ``used`` counts only what requests
    spent from it (not refunds, disputes or expiry); the request ids are the receipts."""
    lot = conn.execute(
        select(lots.c.original_nanos, lots.c.remaining_nanos).where(lots.c.id == lot_id)
    ).one()
    spent = (
        select(
            entries.c.cause_type,
            entries.c.cause_id,
            func.sum(postings.c.amount_nanos).label("amount"),
        )
        .join(entries, entries.c.id == postings.c.entry_id)
        .where(
            postings.c.lot_id == lot_id,
            postings.c.amount_nanos < 0,
            entries.c.kind.not_in(TAKEBACK_KINDS),
        )
        .group_by(entries.c.cause_type, entries.c.cause_id)
        .order_by(func.min(entries.c.id))
    )
    used, requests = 0, []
    for row in conn.execute(spent):
        used -= int(row.amount)
        if row.cause_type == "request" and row.cause_id:
            requests.append(str(row.cause_id))
    return int(lot.original_nanos), int(lot.remaining_nanos), used, requests


def entry_summary(conn: Connection, entry_id: int) -> RowMapping | None:
    stmt = select(
        entries.c.id, entries.c.kind, entries.c.idempotency_key, entries.c.created_at
    ).where(entries.c.id == entry_id)
    return conn.execute(stmt).mappings().first()


def order_by_id(conn: Connection, order_id: int) -> RowMapping:
    return conn.execute(select(payment_orders).where(OC.id == order_id)).mappings().one()


def hold_status(conn: Connection, hold_key: str) -> str | None:
    """The ledger hold's state (pending / settled / released / expired), None if none."""
    row = conn.execute(select(holds.c.status).where(holds.c.hold_key == hold_key)).first()
    return None if row is None else str(row[0])
