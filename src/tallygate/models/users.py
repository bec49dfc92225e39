from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from tallygate.db.base import metadata

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("display_name", String(200), nullable=False, server_default=""),
    Column("disabled", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    # Operators' second factor: the TOTP secret sealed with the server's secret key, when it
    # was confirmed, and the step of the last accepted code (a code is never accepted twice).
    Column("totp_secret", String(255), nullable=True),
    Column("totp_enrolled_at", BigInteger, nullable=True),
    Column("totp_last_step", BigInteger, nullable=True),
    CheckConstraint("role IN ('user', 'operator')", name="role"),
)

user_sessions = Table(
    "user_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

# Failed sign-ins (wrong password or wrong second-factor code), one row per failure and key
# (``email:…`` or ``ip:…``): the login limit counts them across every process.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(400), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_login_failures_key_created", "key", "created_at"),
)

# Operators' one-time recovery codes (printed once by ``tallygate create-admin`` and
# ``tallygate reset-totp``): only an HMAC of each is kept; ``used_at`` is set by the one
# conditional UPDATE that accepts it, so a code opens the second step once.
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
)
