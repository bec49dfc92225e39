"""Top-up orders, their state history, refunds, and the inbox of external events.

Payment amounts are in the provider currency's minor units (``*_minor``, ISO 4217 exponent);
ledger amounts are nano-units of the bucket's currency (``*_nanos``)."""

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
    UniqueConstraint,
)

from tallygate.db.base import metadata

ORDER_STATES = (
    "pending",
    "processing",
    "awaiting_review",
    "paid",
    "expired",
    "canceled",
    "failed",
    "rejected",
)

payment_orders = Table(
    "payment_orders",
    metadata,
    Column("id", Integer, primary_key=True),
    # Public id shown to users and sent to providers as the merchant reference ("ord_…").
    Column("public_id", String(40), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("bucket", String(16), nullable=False),
    Column("bucket_currency", String(8), nullable=False),
    # sandbox | stripe | wechat | bank
    Column("provider", String(16), nullable=False),
    # 1 for sandbox (test-mode) orders: shown as such everywhere.
    Column("test_mode", Integer, nullable=False, server_default="0"),
    Column("status", String(24), nullable=False),
    # What the user asked to pay, in minor units of ``currency`` (the provider currency).
    Column("currency", String(8), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    # Exact decimal strings, snapshotted at creation: bucket units per payment-currency unit,
    # and the bonus fraction of the tier the amount fell into ("0" when none).
    Column("rate", String(40), nullable=False),
    Column("bonus_rate", String(40), nullable=False, server_default="0"),
    # The credit the requested amount would give (nano-units), shown before paying.
    Column("quoted_nanos", BigInteger, nullable=False),
    # What the provider reports as paid (minor units, currency), once paid.
    Column("paid_minor", BigInteger, nullable=True),
    Column("paid_currency", String(8), nullable=True),
    # What the ledger credited (nano-units of bucket_currency), once paid.
    Column("credited_nanos", BigInteger, nullable=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=True),
    Column("lot_id", Integer, ForeignKey("lots.id"), nullable=True),
    # Provider objects: checkout session / out_trade_no; payment (intent / transaction id).
    Column("provider_ref", String(200), nullable=True),
    Column("provider_payment_id", String(200), nullable=True),
    Column("checkout_url", Text, nullable=True),
    # Bank transfer: the reference the user submitted.
    Column("transfer_reference", String(200), nullable=True),
    # none | pending (a refund is in flight: its money is held) | partial | full
    Column("refund_state", String(16), nullable=False, server_default="none"),
    Column("dispute_state", String(16), nullable=False, server_default="none"),
    # Σ minor units refunded and not failed (the order's refunds).
    Column("refunded_minor", BigInteger, nullable=False, server_default="0"),
    # Set when the order needs an operator's eye (amount mismatch, dispute …), with why.
    Column("flag", String(40), nullable=True),
    Column("flag_detail", Text, nullable=True),
    Column("paid_after_expiry", Integer, nullable=False, server_default="0"),
    # Four eyes: a bank approval above the operator-set threshold, recorded by a first
    # operator and waiting for a second, different one (JSON: operator, amount, currency …).
    Column("first_approval_json", Text, nullable=True),
    Column("status_reason", Text, nullable=False, server_default=""),
    Column("expires_at", BigInteger, nullable=False),
    Column("paid_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint("bucket IN ('credit', 'routed')", name="bucket"),
    CheckConstraint("provider IN ('sandbox', 'stripe', 'wechat', 'bank')", name="provider"),
    CheckConstraint(
        "status IN ('pending', 'processing', 'awaiting_review', 'paid', 'expired', "
        "'canceled', 'failed', 'rejected')",
        name="status",
    ),
    CheckConstraint("refund_state IN ('none', 'pending', 'partial', 'full')", name="refund_state"),
    CheckConstraint("dispute_state IN ('none', 'open', 'won', 'lost')", name="dispute_state"),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    UniqueConstraint("provider", "provider_ref", name="uq_payment_orders_provider_ref"),
)
# The expiry sweep: due pending orders only.
Index("ix_payment_orders_status_expires", payment_orders.c.status, payment_orders.c.expires_at)

order_events = Table(
    "order_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("payment_orders.id"), nullable=False, index=True),
    Column("at", BigInteger, nullable=False),
    Column("from_status", String(24), nullable=True),
    Column("to_status", String(24), nullable=False),
    # user | sandbox | webhook | redirect | sweeper | operator | system
    Column("source", String(24), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("public_id", String(40), nullable=False, unique=True),
    Column("order_id", Integer, ForeignKey("payment_orders.id"), nullable=False, index=True),
    Column("provider", String(16), nullable=False),
    # The provider's refund id (Stripe ``re_…``, WeChat ``refund_id``); NULL for manual ones
    # and until the provider answered an operator's request.
    Column("provider_refund_id", String(200), nullable=True),
    # Our key: sent to the provider as its Idempotency-Key and used for the debit entry.
    Column("idempotency_key", String(200), nullable=False, unique=True),
    # webhook | manual | admin
    Column("source", String(16), nullable=False),
    Column("actor", String(200), nullable=False, server_default=""),
    Column("reason", Text, nullable=False, server_default=""),
    # requested | pending | succeeded | failed | canceled
    Column("status", String(16), nullable=False),
    Column("currency", String(8), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    # The refund converted at the order's rate (nano-units of the bucket's currency).
    Column("amount_nanos", BigInteger, nullable=False),
    # While the provider processes the refund, the money it will take is held in the bucket
    # (a ledger hold: not spendable, not yet taken); settled on success, released on failure.
    Column("hold_key", String(200), nullable=True),
    Column("held_nanos", BigInteger, nullable=False, server_default="0"),
    # The debit: what it took from the bucket, what it booked as debt, what is left undecided.
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=True),
    Column("taken_nanos", BigInteger, nullable=False, server_default="0"),
    Column("debt_nanos", BigInteger, nullable=False, server_default="0"),
    Column("shortfall_nanos", BigInteger, nullable=False, server_default="0"),
    # none | debt | awaiting_decision | written_off | canceled
    Column("shortfall_state", String(24), nullable=False, server_default="none"),
    Column("shortfall_entry_id", Integer, ForeignKey("entries.id"), nullable=True),
    Column("decision_reason", Text, nullable=False, server_default=""),
    # How much of the order's lot had been spent when the refund was booked (nano-units).
    Column("credit_used_nanos", BigInteger, nullable=True),
    Column("balance_after_nanos", BigInteger, nullable=True),
    # JSON list of receipt request ids that drew on the order's lot.
    Column("receipts_json", Text, nullable=False, server_default="[]"),
    # The compensating re-credit when a succeeded refund later failed.
    Column("recredit_entry_id", Integer, ForeignKey("entries.id"), nullable=True),
    Column("duplicates_suppressed", Integer, nullable=False, server_default="0"),
    Column("first_seen_at", BigInteger, nullable=False),
    Column("booked_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    UniqueConstraint("provider", "provider_refund_id", name="uq_refunds_provider_refund_id"),
)

inbox_events = Table(
    "inbox_events",
    metadata,
    Column("id", Integer, primary_key=True),
    # stripe | wechat
    Column("source", String(16), nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("event_type", String(100), nullable=False),
    # The raw body as received (verified before it was stored).
    Column("payload", Text, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("deliveries", Integer, nullable=False, server_default="1"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("handled_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("source", "external_id", name="uq_inbox_events_source_external_id"),
)
Index("ix_inbox_events_unhandled", inbox_events.c.handled_at, inbox_events.c.received_at)

JOB_STATES = ("queued", "running", "done", "dead")

# The durable work queue behind webhooks: one job per stored inbox event. A worker claims a
# due job (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one UPDATE … WHERE claimed_by IS NULL),
# runs it, and marks it done, or queues it again after a backoff; never deleted.
payment_jobs = Table(
    "payment_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("inbox_id", Integer, ForeignKey("inbox_events.id"), nullable=False, unique=True),
    # stripe | wechat
    Column("source", String(16), nullable=False),
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # Not before this time (epoch µs): the backoff after a failed attempt.
    Column("run_after", BigInteger, nullable=False),
    # The worker that holds the job while it runs, and since when (a lease a crashed worker
    # loses after ``LEASE``).
    Column("claimed_by", String(80), nullable=True),
    Column("claimed_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=True),
    CheckConstraint("status IN ('queued', 'running', 'done', 'dead')", name="status"),
)
Index("ix_payment_jobs_due", payment_jobs.c.status, payment_jobs.c.run_after)
