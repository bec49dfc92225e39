"""Request receipts (one per /v1 request, failed ones too) and request idempotency."""

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table, Text, text

from tallygate.db.base import metadata

receipts = Table(
    "receipts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("user_id", Integer, nullable=False),
    Column("key_id", Integer, nullable=True),
    Column("key_label", String(200), nullable=False, server_default=""),
    Column("project", String(200), nullable=False, server_default=""),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(200), nullable=False, server_default=""),  # public model
    Column("api_model_id", String(200), nullable=False, server_default=""),
    Column("upstream_model", String(200), nullable=False, server_default=""),
    Column("route_type", String(16), nullable=False, server_default=""),
    Column("bucket", String(16), nullable=False, server_default=""),
    Column("currency", String(8), nullable=False, server_default=""),
    Column("primary_channel", String(200), nullable=False, server_default=""),  # public label
    Column("channel", String(200), nullable=False, server_default=""),  # label that answered
    Column("backup_used", Integer, nullable=False, server_default="0"),
    Column("attempts_json", Text, nullable=False, server_default="[]"),
    Column("input_tokens", Integer, nullable=False, server_default="0"),
    Column("output_tokens", Integer, nullable=False, server_default="0"),
    Column("cached_tokens", Integer, nullable=False, server_default="0"),
    Column("usage_basis", String(16), nullable=False, server_default="none"),
    Column("price_version_id", Integer, nullable=True),
    Column("input_per_m_nanos", BigInteger, nullable=False, server_default="0"),
    Column("output_per_m_nanos", BigInteger, nullable=False, server_default="0"),
    Column("cached_input_per_m_nanos", BigInteger, nullable=False, server_default="0"),
    Column("hold_nanos", BigInteger, nullable=False, server_default="0"),
    Column("charge_nanos", BigInteger, nullable=False, server_default="0"),
    Column("overrun_nanos", BigInteger, nullable=False, server_default="0"),
    Column("balance_after_nanos", BigInteger, nullable=True),
    # ok | failed | partial (stream cut short) | rejected (refused before any upstream call)
    Column("status", String(16), nullable=False),
    Column("failure_class", String(32), nullable=False, server_default=""),
    Column("charge_policy", String(64), nullable=False, server_default=""),
    Column("entry_id", Integer, ForeignKey("entries.id"), nullable=True),
    Column("http_status", Integer, nullable=False),
    Column("error_code", String(64), nullable=False, server_default=""),
    Column("error_message", Text, nullable=False, server_default=""),
    Column("latency_us", BigInteger, nullable=False, server_default="0"),
    Column("ttft_us", BigInteger, nullable=True),
    Column("streamed", Integer, nullable=False, server_default="0"),
    Column("client_disconnected", Integer, nullable=False, server_default="0"),
    # The upstream's own id of a Responses API object, so a follow-up request naming it as
    # previous_response_id goes back to the channel that created it.
    Column("upstream_response_id", String(200), nullable=True),
    Column("channel_id", Integer, nullable=True),
    Index("ix_receipts_user_created", "user_id", "created_at"),
    Index(
        "ix_receipts_upstream_response_id",
        "upstream_response_id",
        sqlite_where=text("upstream_response_id IS NOT NULL"),
        postgresql_where=text("upstream_response_id IS NOT NULL"),
    ),
    Index("ix_receipts_model_route_created", "model", "route_type", "created_at"),
)

request_idempotency = Table(
    "request_idempotency",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key_id", Integer, nullable=False),
    Column("idem_key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending | done
    Column("response_status", Integer, nullable=True),
    Column("response_body", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_request_idempotency_key", "key_id", "idem_key", unique=True),
)
