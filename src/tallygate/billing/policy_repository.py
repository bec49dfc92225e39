"""SQL for the operator's stored charge policy (one ``settings_kv`` row)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from tallygate.models.catalog import settings_kv


def read(conn: Connection, key: str) -> str | None:
    found = conn.execute(select(settings_kv.c.value_json).where(settings_kv.c.key == key)).scalar()
    return None if found is None else str(found)


def write(conn: Connection, key: str, value_json: str, now_us: int) -> None:
    """Upsert in one statement: two operators saving at once cannot both insert the row."""
    dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(settings_kv).values(key=key, value_json=value_json, updated_at=now_us)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[settings_kv.c.key],
            set_={"value_json": stmt.excluded.value_json, "updated_at": stmt.excluded.updated_at},
        )
    )
