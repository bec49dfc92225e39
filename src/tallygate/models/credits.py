"""Promotional credit: campaigns, their redeem codes, redemptions (codes and starter grants),
failed claim attempts (the rate limit), and operators' adjustments.

Every unit of promotional value is traceable: campaign → redemption → ledger entry → the lot
it opened → the postings (and so the requests) that drew from that lot."""

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
)

from tallygate.db.base import metadata

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    # 'codes': claimed with redeem codes; 'starter': granted once to each new account.
    Column("kind", String(16), nullable=False),
    # The bucket credited, and so the routes the credit can pay (credit → official routes,
    # routed → routed ones).
    Column("bucket", String(16), nullable=False),
    # Nano-units of the bucket's currency granted per claim.
    Column("amount_nanos", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    # Claim window (µs since the epoch); NULL = open on that side.
    Column("valid_from", BigInteger, nullable=True),
    Column("valid_until", BigInteger, nullable=True),
    # Credit expiry: the lot opened by a claim expires at the earlier of a fixed time and
    # claim time + TTL (either may be NULL; both NULL = the credit never expires).
    Column("credit_expires_at", BigInteger, nullable=True),
    Column("credit_ttl_seconds", BigInteger, nullable=True),
    Column("lot_priority", Integer, nullable=False, server_default="100"),
    # Total claims allowed (NULL = no cap), claims per account, starter grants per client
    # address (NULL = no cap).
    Column("total_cap", Integer, nullable=True),
    Column("per_account_limit", Integer, nullable=False, server_default="1"),
    Column("per_address_limit", Integer, nullable=True),
    # Claims so far: moved only by the conditional UPDATE of a claim (cap and status checked in
    # the same statement), so the cap is exact under concurrency.
    Column("redeemed_count", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_by", String(320), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
    CheckConstraint("kind IN ('codes', 'starter')", name="kind"),
    CheckConstraint("bucket IN ('credit', 'routed')", name="bucket"),
    CheckConstraint("status IN ('active', 'disabled')", name="status"),
    CheckConstraint("amount_nanos > 0", name="amount_positive"),
    CheckConstraint("per_account_limit >= 1", name="per_account_limit"),
    CheckConstraint("total_cap IS NULL OR redeemed_count <= total_cap", name="cap"),
)

redeem_codes = Table(
    "redeem_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False, index=True),
    # Visible, non-secret start of the code ("WELCOME-7K3M"): lists, CSVs, redemption rows.
    Column("prefix", String(40), nullable=False),
    # HMAC-SHA256 (hex) of the normalised code under the server secret; the code itself is
    # shown once, at generation, and never stored.
    Column("digest", String(64), nullable=False, unique=True),
    # 1: one code many accounts may claim (each within the campaign's per-account limit).
    Column("shared", Integer, nullable=False, server_default="0"),
    # Claims allowed on this code: 1 for single-use codes, NULL (campaign cap only) for shared.
    Column("max_redemptions", Integer, nullable=True),
    Column("redeemed_count", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
    CheckConstraint("status IN ('active', 'disabled')", name="status"),
    CheckConstraint(
        "max_redemptions IS NULL OR redeemed_count <= max_redemptions", name="max_redemptions"
    ),
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    # NULL for starter grants.
    Column("code_id", Integer, ForeignKey("redeem_codes.id"), nullable=True, index=True),
    Column("code_prefix", String(40), nullable=False, server_default=""),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    # The claim's unique key, also the ledger entry's idempotency key:
    # ``redeem:<campaign>:<user>:<n>`` (the account's n-th claim of the campaign) or
    # ``starter:<user>:<bucket>``. UNIQUE closes the same-account race on both databases.
    Column("grant_key", String(120), nullable=False, unique=True),
    Column("bucket", String(16), nullable=False),
    # Nano-units granted (debt on the bucket, if any, is repaid first: the lot may be smaller).
    Column("amount_nanos", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=True),
    Column("lot_id", Integer, ForeignKey("lots.id"), nullable=True),
    Column("lot_expires_at", BigInteger, nullable=True),
    Column("client_address", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_redemptions_user_created", "user_id", "created_at"),
    Index("ix_redemptions_campaign_address", "campaign_id", "client_address"),
)

# Failed claim attempts, counted per account and per client address over a sliding window so
# the limit holds across processes. Written in its own transaction after the refused claim
# rolled back; rows older than the window are pruned on write.
redeem_failures = Table(
    "redeem_failures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("client_address", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_redeem_failures_user_created", "user_id", "created_at"),
    Index("ix_redeem_failures_address_created", "client_address", "created_at"),
)

adjustments = Table(
    "adjustments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("bucket", String(16), nullable=False),
    # Signed nano-units of the bucket's currency: positive credits the user, negative debits.
    Column("amount_nanos", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("reason", Text, nullable=False),
    # The receipt (request id) this adjustment corrects, if any.
    Column("request_id", String(64), nullable=True, index=True),
    # Also the ledger entry's idempotency key (``adjustment:<key>``).
    Column("idempotency_key", String(120), nullable=False, unique=True),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=False),
    Column("operator", String(320), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("amount_nanos <> 0", name="nonzero"),
    CheckConstraint("length(reason) > 0", name="reason"),
)
