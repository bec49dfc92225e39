from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Integer, String, Table

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
