"""Every SQL statement for channels and their model mappings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from tallygate.models.catalog import channel_models, channels

# Everything but the ciphertext: reads for display never load the secret.
_PUBLIC_COLUMNS = (
    channels.c.id,
    channels.c.name,
    channels.c.label,
    channels.c.kind,
    channels.c.base_url,
    (channels.c.secret_ciphertext != "").label("has_secret"),
    channels.c.route_type,
    channels.c.priority,
    channels.c.weight,
    channels.c.enabled,
    channels.c.timeout_seconds,
    channels.c.created_at,
)


def channel(conn: Connection, channel_id: int) -> RowMapping | None:
    stmt = select(*_PUBLIC_COLUMNS).where(channels.c.id == channel_id)
    return conn.execute(stmt).mappings().first()


def channel_id_by_name(conn: Connection, name: str) -> int | None:
    found = conn.execute(select(channels.c.id).where(channels.c.name == name)).scalar()
    return None if found is None else int(found)


def all_channels(conn: Connection) -> list[RowMapping]:
    stmt = select(*_PUBLIC_COLUMNS).order_by(
        channels.c.route_type, channels.c.priority.desc(), channels.c.id
    )
    return list(conn.execute(stmt).mappings())


def secret_ciphertext(conn: Connection, channel_id: int) -> str:
    stmt = select(channels.c.secret_ciphertext).where(channels.c.id == channel_id)
    return str(conn.execute(stmt).scalar() or "")


def insert_channel(conn: Connection, **values: Any) -> int:
    stmt = insert(channels).values(**values).returning(channels.c.id)
    return int(conn.execute(stmt).scalar_one())


def update_channel(conn: Connection, channel_id: int, values: dict[str, Any]) -> None:
    if values:
        conn.execute(update(channels).where(channels.c.id == channel_id).values(**values))


def mappings(conn: Connection, channel_ids: list[int] | None = None) -> list[RowMapping]:
    stmt = select(
        channel_models.c.channel_id, channel_models.c.model_name, channel_models.c.upstream_model
    ).order_by(channel_models.c.channel_id, channel_models.c.model_name)
    if channel_ids is not None:
        stmt = stmt.where(channel_models.c.channel_id.in_(channel_ids))
    return list(conn.execute(stmt).mappings())


def replace_mappings(conn: Connection, channel_id: int, pairs: list[tuple[str, str]]) -> None:
    conn.execute(delete(channel_models).where(channel_models.c.channel_id == channel_id))
    if pairs:
        conn.execute(
            insert(channel_models),
            [{"channel_id": channel_id, "model_name": m, "upstream_model": u} for m, u in pairs],
        )
