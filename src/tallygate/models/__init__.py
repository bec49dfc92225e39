"""All tables, as SQLAlchemy Core ``Table`` objects on one ``MetaData``.

Times are integer microseconds since the Unix epoch (UTC) — the same on SQLite and PostgreSQL.
Money columns end in ``_nanos`` and hold integer nano-units of the row's currency."""

from tallygate.db.base import metadata
from tallygate.models import (
    audit,
    catalog,
    credits,
    keys,
    ledger,
    payments,
    receipts,
    research,
    users,
)

__all__ = [
    "metadata",
    "audit",
    "catalog",
    "credits",
    "keys",
    "ledger",
    "payments",
    "receipts",
    "research",
    "users",
]
