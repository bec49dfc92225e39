"""Every SQL statement for API keys and their spend limits (SQLAlchemy Core, both databases).

The spend counters of ``key_spend`` belong to the ledger's holds: this module writes only the
``limit_*`` columns and creates the rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from tallygate.models.keys import api_keys, key_spend

_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.user_id,
    api_keys.c.prefix,
    api_keys.c.label,
    api_keys.c.project,
    api_keys.c.allowed_models,
    api_keys.c.allowed_route_types,
    api_keys.c.default_route_type,
    api_keys.c.rpm_limit,
    api_keys.c.tpm_limit,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.created_at,
)


def insert_key(conn: Connection, **values: Any) -> int:
    stmt = insert(api_keys).values(**values).returning(api_keys.c.id)
    return int(conn.execute(stmt).scalar_one())


def insert_spend(
    conn: Connection, *, key_id: int, bucket: str, limit_total: int | None, limit_daily: int | None
) -> None:
    conn.execute(
        insert(key_spend).values(
            key_id=key_id,
            bucket=bucket,
            limit_total_nanos=limit_total,
            limit_daily_nanos=limit_daily,
        )
    )


def key_by_id(conn: Connection, key_id: int) -> RowMapping | None:
    return conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.id == key_id)).mappings().first()


def key_hash_of(conn: Connection, key_id: int) -> str | None:
    found = conn.execute(select(api_keys.c.key_hash).where(api_keys.c.id == key_id)).scalar()
    return None if found is None else str(found)


def list_keys(
    conn: Connection, *, user_id: int | None, after_id: int | None, limit: int
) -> list[RowMapping]:
    """Keys in id order, keyset-paginated; every user's when ``user_id`` is None."""
    stmt = select(*_KEY_COLUMNS).order_by(api_keys.c.id).limit(limit)
    if user_id is not None:
        stmt = stmt.where(api_keys.c.user_id == user_id)
    if after_id is not None:
        stmt = stmt.where(api_keys.c.id > after_id)
    return list(conn.execute(stmt).mappings())


def live_keys_of(conn: Connection, user_id: int, now_us: int) -> list[RowMapping]:
    """The user's keys that can still be used: not revoked, not expired."""
    stmt = (
        select(*_KEY_COLUMNS)
        .where(
            api_keys.c.user_id == user_id,
            api_keys.c.revoked_at.is_(None),
            (api_keys.c.expires_at.is_(None)) | (api_keys.c.expires_at > now_us),
        )
        .order_by(api_keys.c.id)
    )
    return list(conn.execute(stmt).mappings())


def spend_rows(conn: Connection, key_ids: list[int]) -> list[RowMapping]:
    if not key_ids:
        return []
    stmt = (
        select(
            key_spend.c.key_id,
            key_spend.c.bucket,
            key_spend.c.limit_total_nanos,
            key_spend.c.limit_daily_nanos,
            key_spend.c.total_spent_nanos,
            key_spend.c.total_reserved_nanos,
            key_spend.c.day,
            key_spend.c.day_spent_nanos,
            key_spend.c.day_reserved_nanos,
        )
        .where(key_spend.c.key_id.in_(key_ids))
        .order_by(key_spend.c.key_id, key_spend.c.bucket)
    )
    return list(conn.execute(stmt).mappings())


def update_key(conn: Connection, key_id: int, values: dict[str, Any]) -> None:
    if values:
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))


def set_spend_limits(
    conn: Connection, *, key_id: int, bucket: str, limit_total: int | None, limit_daily: int | None
) -> None:
    """Only the limits: the counters are the holds' (a spent counter is never rewritten)."""
    conn.execute(
        update(key_spend)
        .where(key_spend.c.key_id == key_id, key_spend.c.bucket == bucket)
        .values(limit_total_nanos=limit_total, limit_daily_nanos=limit_daily)
    )


def revoke(conn: Connection, key_id: int, now_us: int) -> bool:
    """Revoke once: a conditional UPDATE, so a second revoke keeps the first time and says so."""
    stmt = (
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now_us)
    )
    return conn.execute(stmt).rowcount == 1
