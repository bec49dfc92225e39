"""The inbox table: store once per (source, external id), mark handled or failed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tallygate.models.payments import inbox_events

C = inbox_events.c


@dataclass(frozen=True, slots=True)
class Stored:
    id: int
    new: bool
    handled: bool


def store(
    conn: Connection, *, source: str, external_id: str, event_type: str, payload: str, now_us: int
) -> Stored:
    """Insert the event unless (source, external_id) exists; a duplicate bumps ``deliveries``.

    INSERT … ON CONFLICT DO NOTHING closes the race of concurrent deliveries of one event:
    exactly one insert wins; the others wait on the unique index, then see its row."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(inbox_events)
        .values(
            source=source,
            external_id=external_id,
            event_type=event_type,
            payload=payload,
            received_at=now_us,
        )
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(C.id)
    )
    inserted = conn.execute(stmt).scalar()
    if inserted is not None:
        return Stored(int(inserted), True, False)
    conn.execute(
        update(inbox_events)
        .where(C.source == source, C.external_id == external_id)
        .values(deliveries=C.deliveries + 1)
    )
    row = conn.execute(
        select(C.id, C.handled_at).where(C.source == source, C.external_id == external_id)
    ).one()
    return Stored(int(row.id), False, row.handled_at is not None)


def mark_handled(conn: Connection, event_id: int, now_us: int, note: str | None = None) -> None:
    conn.execute(
        update(inbox_events)
        .where(C.id == event_id, C.handled_at.is_(None))
        .values(handled_at=now_us, attempts=C.attempts + 1, last_error=note)
    )


def mark_failed(conn: Connection, event_id: int, error: str) -> None:
    conn.execute(
        update(inbox_events)
        .where(C.id == event_id)
        .values(attempts=C.attempts + 1, last_error=error[:2000])
    )


def unhandled(
    conn: Connection, *, received_before: int, max_attempts: int, limit: int
) -> list[tuple[int, str, str]]:
    """(id, source, payload) of events still to process, oldest first."""
    stmt = (
        select(C.id, C.source, C.payload)
        .where(C.handled_at.is_(None), C.received_at <= received_before, C.attempts < max_attempts)
        .order_by(C.received_at)
        .limit(limit)
    )
    return [(int(r.id), str(r.source), str(r.payload)) for r in conn.execute(stmt)]
