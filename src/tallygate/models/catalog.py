"""Model catalog: public models, one offer per route type, immutable price versions, channels."""

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

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("context_length", Integer, nullable=False),
    Column("output_cap", Integer, nullable=False),
    Column("enabled", Integer, nullable=False, server_default="1"),
    Column("created_at", BigInteger, nullable=False),
)

model_offers = Table(
    "model_offers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("route_type", String(16), nullable=False),
    Column("price_version_id", Integer, nullable=True),  # the current price version
    Column("enabled", Integer, nullable=False, server_default="1"),
    CheckConstraint("route_type IN ('official', 'routed')", name="route_type"),
    Index("ix_model_offers_model_route", "model_id", "route_type", unique=True),
)

# Never updated: a price change inserts a new version and points the offer at it. Prices are
# integer nano-units of the paying bucket's currency per million tokens.
price_versions = Table(
    "price_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("offer_id", Integer, ForeignKey("model_offers.id"), nullable=False, index=True),
    Column("currency", String(8), nullable=False),
    Column("input_per_m_nanos", BigInteger, nullable=False),
    Column("output_per_m_nanos", BigInteger, nullable=False),
    Column("cached_input_per_m_nanos", BigInteger, nullable=False),
    Column("source", String(32), nullable=False),  # manual | sync | demo
    Column("created_by", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint(
        "input_per_m_nanos >= 0 AND output_per_m_nanos >= 0 AND cached_input_per_m_nanos >= 0",
        name="prices_not_negative",
    ),
)

channels = Table(
    "channels",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),  # internal, operators only
    Column("label", String(200), nullable=False),  # public, shown to users and on receipts
    Column("kind", String(32), nullable=False, server_default="openai_compatible"),
    Column("base_url", String(500), nullable=False),
    # The upstream secret, encrypted with the server's secret key; never returned.
    Column("secret_ciphertext", Text, nullable=False, server_default=""),
    Column("route_type", String(16), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),  # higher = tried first
    Column("weight", Integer, nullable=False, server_default="1"),
    Column("enabled", Integer, nullable=False, server_default="1"),
    Column("timeout_seconds", Integer, nullable=False, server_default="120"),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("route_type IN ('official', 'routed')", name="route_type"),
    CheckConstraint("weight > 0", name="weight_positive"),
)

channel_models = Table(
    "channel_models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("channel_id", Integer, ForeignKey("channels.id"), nullable=False),
    Column("model_name", String(200), nullable=False),  # public model name
    Column("upstream_model", String(200), nullable=False),
    Index("ix_channel_models_channel_model", "channel_id", "model_name", unique=True),
)

# Operator settings that are data, not deployment configuration (charge policies …).
settings_kv = Table(
    "settings_kv",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value_json", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
