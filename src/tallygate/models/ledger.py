"""The ledger's tables. Only ``tallygate.ledger`` writes them."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)

from tallygate.db.base import metadata

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(120), nullable=False, unique=True),
    # 'bucket' (a user's spendable balance), 'debt' (what a user owes on a bucket) or 'platform'.
    Column("kind", String(16), nullable=False),
    Column("user_id", Integer, nullable=True),
    Column("bucket", String(16), nullable=True),
    Column("currency", String(8), nullable=False),
    # +1: credit-normal (balance = Σ postings); -1: debit-normal (balance = -Σ postings).
    Column("normal", Integer, nullable=False),
    # Cached balance in nano-units, in the account's normal direction. Kept for user accounts
    # only (bucket and debt), written in the same transaction as the postings; platform
    # accounts are derived from postings so no hot row serialises every request.
    Column("balance_nanos", BigInteger, nullable=False, server_default="0"),
    # Sum of pending holds on this account, in nano-units.
    Column("held_nanos", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("kind IN ('bucket', 'debt', 'platform')", name="kind"),
    CheckConstraint("normal IN (1, -1)", name="normal"),
    CheckConstraint(
        "kind = 'platform' OR (balance_nanos >= 0 AND held_nanos >= 0 "
        "AND held_nanos <= balance_nanos)",
        name="user_not_negative",
    ),
    Index("ix_accounts_user_bucket_kind", "user_id", "bucket", "kind", unique=True),
    # Ids are never reused (SQLite would otherwise reuse the ids of rolled-back rows), so an id
    # a process remembered can never come to mean another user's account.
    sqlite_autoincrement=True,
)

entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    # topup, refund, reversal, redeem, adjustment, usage, expiry, grant, dispute …
    Column("kind", String(32), nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    # Canonical JSON of the request that created the entry: a replay with the same key is
    # compared against it field by field.
    Column("request_json", Text, nullable=True),
    Column("cause_type", String(32), nullable=True),
    Column("cause_id", String(100), nullable=True),
    Column("memo", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_entries_cause", "cause_type", "cause_id"),
)

postings = Table(
    "postings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=False, index=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    # Signed nano-units: positive credits the account, negative debits it. Σ per entry and
    # currency = 0.
    Column("amount_nanos", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    # For bucket accounts: the lot this posting opened (credit) or drew from (debit).
    Column("lot_id", Integer, ForeignKey("lots.id"), nullable=True, index=True),
    # Account balance (normal direction) right after this posting, for user accounts.
    Column("balance_after_nanos", BigInteger, nullable=True),
    CheckConstraint("amount_nanos <> 0", name="nonzero"),
    Index("ix_postings_account_entry", "account_id", "entry_id"),
)

lots = Table(
    "lots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("source_entry_id", Integer, ForeignKey("entries.id"), nullable=False),
    # 'paid' (top-up), 'promo' (redeem code, starter credit), 'adjustment'.
    Column("kind", String(16), nullable=False),
    Column("priority", Integer, nullable=False, server_default="100"),
    Column("original_nanos", BigInteger, nullable=False),
    Column("remaining_nanos", BigInteger, nullable=False),
    # Part of the remainder reserved by pending holds: expiry and reversals cannot take it.
    Column("earmarked_nanos", BigInteger, nullable=False, server_default="0"),
    Column("expires_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("original_nanos > 0", name="original_positive"),
    CheckConstraint(
        "remaining_nanos >= 0 AND earmarked_nanos >= 0 AND earmarked_nanos <= remaining_nanos",
        name="remaining_bounds",
    ),
    CheckConstraint("kind IN ('paid', 'promo', 'adjustment')", name="kind"),
)
# The draw-order lookup: only lots with something left, per account.
Index(
    "ix_lots_open",
    lots.c.account_id,
    lots.c.priority,
    lots.c.id,
    sqlite_where=text("remaining_nanos > 0"),
    postgresql_where=text("remaining_nanos > 0"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hold_key", String(200), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount_nanos", BigInteger, nullable=False),
    # pending → settled | released | expired, exactly once (a conditional UPDATE on status).
    Column("status", String(16), nullable=False),
    # "lot_id:amount,lot_id:amount" in draw order: the lot amounts this hold earmarked.
    Column("earmarks", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("resolved_at", BigInteger, nullable=True),
    Column("settled_nanos", BigInteger, nullable=True),
    Column("overrun_nanos", BigInteger, nullable=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=True),
    Column("cause_type", String(32), nullable=True),
    Column("cause_id", String(100), nullable=True),
    # The API key whose spend counters this hold reserved, and the UTC day (yyyymmdd) it did.
    Column("key_id", Integer, nullable=True),
    Column("spend_day", Integer, nullable=True),
    CheckConstraint("amount_nanos > 0", name="amount_positive"),
    CheckConstraint("status IN ('pending', 'settled', 'released', 'expired')", name="status"),
    CheckConstraint(
        "settled_nanos IS NULL OR (settled_nanos >= 0 AND settled_nanos <= amount_nanos)",
        name="settled_bounds",
    ),
)
Index(
    "ix_holds_pending_expiry",
    holds.c.expires_at,
    sqlite_where=text("status = 'pending'"),
    postgresql_where=text("status = 'pending'"),
)
