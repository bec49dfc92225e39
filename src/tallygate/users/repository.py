"""Every SQL statement for users and their sessions (SQLAlchemy Core, both databases)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tallygate.models.users import login_failures, recovery_codes, user_sessions, users

_USER_COLUMNS = (
    users.c.id,
    users.c.email,
    users.c.password_hash,
    users.c.role,
    users.c.display_name,
    users.c.disabled,
    users.c.created_at,
    users.c.totp_enrolled_at,
)


def insert_user_unless_email_taken(
    conn: Connection,
    *,
    email: str,
    password_hash: str,
    role: str,
    display_name: str,
    now_us: int,
) -> int | None:
    """Insert a user; None when the email is taken.

    One ``INSERT … ON CONFLICT (email) DO NOTHING`` closes the race between two sign-ups with
    the same email (a check-then-insert would let both pass the check), and does not abort a
    PostgreSQL transaction the way a caught unique violation would."""
    dialect_insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (
        dialect_insert(users)
        .values(
            email=email,
            password_hash=password_hash,
            role=role,
            display_name=display_name,
            disabled=0,
            created_at=now_us,
        )
        .on_conflict_do_nothing(index_elements=[users.c.email])
        .returning(users.c.id)
    )
    found = conn.execute(stmt).scalar_one_or_none()
    return int(found) if found is not None else None


def user_by_email(conn: Connection, email: str) -> RowMapping | None:
    return conn.execute(select(*_USER_COLUMNS).where(users.c.email == email)).mappings().first()


def user_by_id(conn: Connection, user_id: int) -> RowMapping | None:
    return conn.execute(select(*_USER_COLUMNS).where(users.c.id == user_id)).mappings().first()


def list_users(conn: Connection, *, after_id: int | None, limit: int) -> list[RowMapping]:
    """Users in id order, keyset-paginated (``after_id`` is the last id of the previous page)."""
    stmt = select(*_USER_COLUMNS).order_by(users.c.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(users.c.id > after_id)
    return list(conn.execute(stmt).mappings())


def set_password_hash(conn: Connection, user_id: int, password_hash: str) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))


def insert_session(
    conn: Connection, *, token_hash: str, user_id: int, now_us: int, expires_at_us: int
) -> int:
    stmt = (
        insert(user_sessions)
        .values(token_hash=token_hash, user_id=user_id, created_at=now_us, expires_at=expires_at_us)
        .returning(user_sessions.c.id)
    )
    return int(conn.execute(stmt).scalar_one())


def session_with_user(conn: Connection, token_hash: str) -> RowMapping | None:
    """The session row (id, expires_at, revoked_at) joined with its user's columns."""
    stmt = (
        select(
            user_sessions.c.id.label("session_id"),
            user_sessions.c.expires_at,
            user_sessions.c.revoked_at,
            *_USER_COLUMNS,
        )
        .join(users, users.c.id == user_sessions.c.user_id)
        .where(user_sessions.c.token_hash == token_hash)
    )
    return conn.execute(stmt).mappings().first()


def revoke_session(conn: Connection, session_id: int, now_us: int) -> bool:
    """Revoke once: a conditional UPDATE, so a second logout changes nothing."""
    stmt = (
        update(user_sessions)
        .where(user_sessions.c.id == session_id, user_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now_us)
    )
    return conn.execute(stmt).rowcount == 1


# ---- second factor (TOTP) --------------------------------------------------------------------


def totp_state(conn: Connection, user_id: int) -> RowMapping | None:
    """The sealed secret, when it was confirmed and the step of the last accepted code."""
    stmt = select(users.c.totp_secret, users.c.totp_enrolled_at, users.c.totp_last_step).where(
        users.c.id == user_id
    )
    return conn.execute(stmt).mappings().first()


def enrol_totp(conn: Connection, user_id: int, *, sealed: str, now_us: int, step: int) -> bool:
    """Store a confirmed secret, unless one was confirmed meanwhile (False then)."""
    stmt = (
        update(users)
        .where(users.c.id == user_id, users.c.totp_enrolled_at.is_(None))
        .values(totp_secret=sealed, totp_enrolled_at=now_us, totp_last_step=step)
    )
    return conn.execute(stmt).rowcount == 1


def reset_totp(conn: Connection, user_id: int) -> None:
    conn.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(totp_secret=None, totp_enrolled_at=None, totp_last_step=None)
    )


def use_totp_step(conn: Connection, user_id: int, step: int) -> bool:
    """Record ``step`` as used, only if it is later than the last used one: a conditional
    UPDATE, so the same code presented twice (even at once, to two processes) passes once."""
    stmt = (
        update(users)
        .where(
            users.c.id == user_id,
            or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < step),
        )
        .values(totp_last_step=step)
    )
    return conn.execute(stmt).rowcount == 1


def replace_recovery_codes(conn: Connection, user_id: int, hashes: list[str], now_us: int) -> None:
    """The operator's recovery codes become exactly these (earlier ones, used or not, go)."""
    conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    conn.execute(
        insert(recovery_codes),
        [{"user_id": user_id, "code_hash": h, "created_at": now_us} for h in hashes],
    )


def use_recovery_code(conn: Connection, user_id: int, code_hash: str, now_us: int) -> bool:
    """Mark the code used, only if it is this operator's and unused: a conditional UPDATE, so
    the same code presented twice (even at once, to two processes) passes once."""
    stmt = (
        update(recovery_codes)
        .where(
            recovery_codes.c.user_id == user_id,
            recovery_codes.c.code_hash == code_hash,
            recovery_codes.c.used_at.is_(None),
        )
        .values(used_at=now_us)
    )
    return conn.execute(stmt).rowcount == 1


def recovery_codes_left(conn: Connection, user_id: int) -> int:
    stmt = select(func.count()).where(
        recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None)
    )
    return int(conn.execute(stmt).scalar_one())


# ---- failed sign-ins -------------------------------------------------------------------------


def failures_since(conn: Connection, keys: list[str], since_us: int) -> dict[str, tuple[int, int]]:
    """Per key with failures after ``since_us``: (how many, the oldest one's time)."""
    stmt = (
        select(login_failures.c.key, func.count(), func.min(login_failures.c.created_at))
        .where(login_failures.c.key.in_(keys), login_failures.c.created_at > since_us)
        .group_by(login_failures.c.key)
    )
    return {str(k): (int(n), int(oldest)) for k, n, oldest in conn.execute(stmt)}


def record_failures(conn: Connection, keys: list[str], now_us: int) -> None:
    conn.execute(insert(login_failures), [{"key": k, "created_at": now_us} for k in keys])


def forget_failures_before(conn: Connection, keys: list[str], before_us: int) -> None:
    conn.execute(
        delete(login_failures).where(
            login_failures.c.key.in_(keys), login_failures.c.created_at <= before_us
        )
    )
