"""API keys and their per-bucket spend counters."""

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Integer, String, Table, Text

from tallygate.db.base import metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    # Visible, non-secret start of the key ("tg-3fA9…"), shown in lists and receipts.
    Column("prefix", String(24), nullable=False),
    # sha256 hex of the full key; the key itself is shown once and never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("label", String(200), nullable=False),
    Column("project", String(200), nullable=False, server_default=""),
    # JSON list of glob patterns over public model names; empty list = every model.
    Column("allowed_models", Text, nullable=False, server_default="[]"),
    # JSON list of route types this key may use ("official", "routed").
    Column("allowed_route_types", Text, nullable=False, server_default='["official", "routed"]'),
    Column("default_route_type", String(16), nullable=False, server_default="routed"),
    Column("rpm_limit", Integer, nullable=True),
    Column("tpm_limit", Integer, nullable=True),
    Column("expires_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("default_route_type IN ('official', 'routed')", name="default_route_type"),
)

# One row per key and bucket: the limits and the counters the hold checks and moves in the
# same transaction as the ledger hold, so a spent limit is exact in every gateway process.
key_spend = Table(
    "key_spend",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("bucket", String(16), nullable=False),
    # Limits in nano-units of the bucket's currency; NULL = no limit.
    Column("limit_total_nanos", BigInteger, nullable=True),
    Column("limit_daily_nanos", BigInteger, nullable=True),
    # Settled charges and still-pending hold amounts, all time and for the UTC day ``day``.
    Column("total_spent_nanos", BigInteger, nullable=False, server_default="0"),
    Column("total_reserved_nanos", BigInteger, nullable=False, server_default="0"),
    Column("day", Integer, nullable=False, server_default="0"),  # yyyymmdd (UTC)
    Column("day_spent_nanos", BigInteger, nullable=False, server_default="0"),
    Column("day_reserved_nanos", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("bucket IN ('credit', 'routed')", name="bucket"),
)
from sqlalchemy import Index  # noqa: E402

Index("ix_key_spend_key_bucket", key_spend.c.key_id, key_spend.c.bucket, unique=True)
