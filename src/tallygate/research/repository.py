"""Every SQL statement of the research runs (SQLAlchemy Core; the caller's transaction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping, func, insert, select, update

from tallygate.models.research import research_events, research_runs, research_steps


def insert_run(conn: Connection, **values: Any) -> None:
    conn.execute(insert(research_runs).values(**values))


def run(conn: Connection, run_id: str) -> RowMapping | None:
    return (
        conn.execute(select(research_runs).where(research_runs.c.id == run_id)).mappings().first()
    )


def runs_of(conn: Connection, user_id: int, limit: int = 50) -> Sequence[RowMapping]:
    query = (
        select(research_runs)
        .where(research_runs.c.user_id == user_id)
        .order_by(research_runs.c.created_at.desc(), research_runs.c.id.desc())
        .limit(limit)
    )
    return conn.execute(query).mappings().all()


def update_run(conn: Connection, run_id: str, **values: Any) -> None:
    conn.execute(update(research_runs).where(research_runs.c.id == run_id).values(**values))


def steps(conn: Connection, run_id: str) -> Sequence[RowMapping]:
    query = (
        select(research_steps)
        .where(research_steps.c.run_id == run_id)
        .order_by(research_steps.c.seq)
    )
    return conn.execute(query).mappings().all()


def insert_step(conn: Connection, **values: Any) -> int:
    return int(conn.execute(insert(research_steps).values(**values)).inserted_primary_key[0])  # type: ignore[index]


def update_step(conn: Connection, step_id: int, **values: Any) -> None:
    conn.execute(update(research_steps).where(research_steps.c.id == step_id).values(**values))


def spent(conn: Connection, run_id: str) -> int:
    query = select(func.coalesce(func.sum(research_steps.c.charge_nanos), 0)).where(
        research_steps.c.run_id == run_id
    )
    return int(conn.execute(query).scalar_one())


def add_event(
    conn: Connection,
    run_id: str,
    *,
    kind: str,
    message: str,
    data: Mapping[str, Any] | None,
    now_us: int,
) -> None:
    conn.execute(
        insert(research_events).values(
            run_id=run_id,
            created_at=now_us,
            kind=kind,
            message=message,
            data_json=orjson.dumps(dict(data or {})).decode(),
        )
    )


def events(conn: Connection, run_id: str, after_id: int = 0) -> Sequence[RowMapping]:
    query = (
        select(research_events)
        .where(research_events.c.run_id == run_id, research_events.c.id > after_id)
        .order_by(research_events.c.id)
    )
    return conn.execute(query).mappings().all()


def receipts(conn: Connection, request_ids: Sequence[str]) -> Sequence[RowMapping]:
    from tallygate.models.receipts import receipts as table

    if not request_ids:
        return []
    query = select(table).where(table.c.request_id.in_(list(request_ids))).order_by(table.c.id)
    return conn.execute(query).mappings().all()


def ledger_debits(conn: Connection, user_id: int, entry_ids: Sequence[int]) -> int:
    """What the entries took from the user's accounts, from their postings (positive)."""
    from tallygate.models.ledger import accounts, postings

    if not entry_ids:
        return 0
    query = (
        select(func.coalesce(func.sum(postings.c.amount_nanos * accounts.c.normal), 0))
        .select_from(postings.join(accounts, accounts.c.id == postings.c.account_id))
        .where(postings.c.entry_id.in_(list(entry_ids)), accounts.c.user_id == user_id)
    )
    return -int(conn.execute(query).scalar_one())
