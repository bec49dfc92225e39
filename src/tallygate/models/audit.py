from sqlalchemy import BigInteger, Column, Integer, String, Table, Text

from tallygate.db.base import metadata

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("source", String(32), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(200), nullable=False),
    Column("before_json", Text, nullable=True),
    Column("after_json", Text, nullable=True),
    Column("reason", Text, nullable=False, server_default=""),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row (id = 1). Every append updates it inside the same transaction, which serialises
# appends (the row lock) so concurrent writers cannot fork the chain, and records the count
# and head hash so that deleting the last event is detected too.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
)
