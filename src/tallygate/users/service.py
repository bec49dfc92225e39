"""Users, passwords and sessions.

Functions take the request's (or command's) connection first and never commit. A session
token is 256 random bits shown to the client once; only its SHA-256 is stored, so a leaked
database does not leak live sessions."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Connection, RowMapping

from tallygate.audit import service as audit
from tallygate.credits import claims as credits
from tallygate.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from tallygate.kit import crypto
from tallygate.ledger import Ledger
from tallygate.ledger.tx import from_connection
from tallygate.users import passwords, totp
from tallygate.users import repository as repo

ROLES = ("user", "operator")


class InvalidEmail(BadRequest):
    code = "invalid_email"


class WeakPassword(BadRequest):
    code = "weak_password"


class EmailTaken(Conflict):
    code = "email_taken"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"


class InvalidSession(Unauthorized):
    code = "invalid_session"


class UserNotFound(NotFound):
    code = "user_not_found"


class TotpRequired(Unauthorized):
    code = "totp_required"


class InvalidTotpCode(Unauthorized):
    code = "invalid_totp_code"


class TotpNotEnrolled(Forbidden):
    code = "totp_not_enrolled"


class TotpAlreadyEnrolled(Conflict):
    code = "totp_already_enrolled"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    role: str
    display_name: str
    disabled: bool
    created_at_us: int
    totp_enrolled: bool = False
    """Whether a second factor (TOTP) is set up: every operator needs one to sign in."""

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated session. ``token`` is set only when the session was just created."""

    id: int
    user: User
    expires_at_us: int
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """A verified email and password: the user, and a stronger hash to store when the stored
    one was made with weaker parameters."""

    user: User
    rehash: str | None = None


@dataclass(frozen=True, slots=True)
class UserPage:
    items: list[User]
    next_cursor: int | None


def _user(m: RowMapping) -> User:
    return User(
        id=int(m["id"]),
        email=str(m["email"]),
        role=str(m["role"]),
        display_name=str(m["display_name"]),
        disabled=bool(m["disabled"]),
        created_at_us=int(m["created_at"]),
        totp_enrolled=m["totp_enrolled_at"] is not None,
    )


def normalize_email(email: str) -> str:
    """Validated and lower-cased, so ``Ann@Example.com`` and ``ann@example.com`` are one user."""
    try:
        valid = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(f"invalid email address: {exc}", param="email") from None
    return valid.normalized.lower()


def check_password(password: str) -> None:
    if len(password) < passwords.MIN_LENGTH:
        raise WeakPassword(
            f"password must be at least {passwords.MIN_LENGTH} characters long", param="password"
        )
    if len(password) > passwords.MAX_LENGTH:
        raise WeakPassword(
            f"password must be at most {passwords.MAX_LENGTH} characters long", param="password"
        )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(
    conn: Connection,
    ledger: Ledger,
    *,
    email: str,
    password: str,
    role: str = "user",
    display_name: str = "",
    now_us: int,
    actor: str = "cli",
    source: str = "cli",
    client_address: str | None = None,
) -> User:
    """Create a user and open their ledger accounts in the same transaction.

    A new ``user`` account gets the configured starter credit in that transaction too, once
    per bucket (``client_address``, when known, feeds the starter campaigns' per-address
    cap). Creating an operator is recorded in the audit trail (``actor``/``source`` say who
    did it)."""
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    address = normalize_email(email)
    check_password(password)
    user_id = repo.insert_user_unless_email_taken(
        conn,
        email=address,
        password_hash=passwords.hash_password(password),
        role=role,
        display_name=display_name.strip(),
        now_us=now_us,
    )
    if user_id is None:
        raise EmailTaken(f"a user with email {address} already exists", param="email")
    tx = ledger.tx(conn)
    ledger.open_user(tx, user_id)
    if role == "user":
        credits.grant_starter(
            conn, ledger, user_id=user_id, now_us=now_us, client_address=client_address
        )
    if role == "operator":
        audit.record(
            tx,
            now_us=now_us,
            actor=actor,
            source=source,
            action="user.create",
            target=f"user:{user_id}",
            after={"email": address, "role": role},
        )
    return get_user(conn, user_id)


def get_user(conn: Connection, user_id: int) -> User:
    row = repo.user_by_id(conn, user_id)
    if row is None:
        raise UserNotFound(f"no user with id {user_id}")
    return _user(row)


def list_users(conn: Connection, *, cursor: int | None, limit: int) -> UserPage:
    rows = repo.list_users(conn, after_id=cursor, limit=limit + 1)
    items = [_user(r) for r in rows[:limit]]
    return UserPage(items, items[-1].id if len(rows) > limit else None)


def authenticate(conn: Connection, *, email: str, password: str) -> Credentials:
    """The user with these credentials, or InvalidCredentials — the same answer, after the same
    amount of hashing work, whether the email is unknown or the password wrong.

    Read-only, so the deliberately slow hashing runs outside any write transaction (on SQLite
    a write transaction holds the one database write lock). A hash made with weaker
    parameters is recomputed here and stored by ``start_session``."""
    refused = InvalidCredentials("invalid email or password")
    try:
        address = normalize_email(email)
    except InvalidEmail:
        passwords.burn_verify(password)
        raise refused from None
    row = repo.user_by_email(conn, address)
    if row is None:
        passwords.burn_verify(password)
        raise refused
    stored = str(row["password_hash"])
    if not passwords.verify_password(stored, password):
        raise refused
    if row["disabled"]:
        # Only someone who knows the password learns that the account exists but is disabled.
        raise InvalidCredentials("this account is disabled", code="account_disabled")
    rehash = passwords.hash_password(password) if passwords.needs_rehash(stored) else None
    return Credentials(_user(row), rehash)


def create_session(conn: Connection, user: User, *, now_us: int, ttl_seconds: int) -> Session:
    token = secrets.token_urlsafe(32)
    expires = now_us + ttl_seconds * 1_000_000
    session_id = repo.insert_session(
        conn, token_hash=token_hash(token), user_id=user.id, now_us=now_us, expires_at_us=expires
    )
    return Session(session_id, user, expires, token)


def start_session(
    conn: Connection, credentials: Credentials, *, now_us: int, ttl_seconds: int
) -> Session:
    """Log in verified credentials: a new session (and the upgraded password hash, if any)."""
    if credentials.rehash is not None:
        repo.set_password_hash(conn, credentials.user.id, credentials.rehash)
    return create_session(conn, credentials.user, now_us=now_us, ttl_seconds=ttl_seconds)


def resolve_session(conn: Connection, token: str, *, now_us: int) -> Session:
    """The live session for ``token``; InvalidSession (401) when unknown, expired, revoked or
    when its user is disabled — each with its own message, none revealing other users."""
    row = repo.session_with_user(conn, token_hash(token))
    if row is None:
        raise InvalidSession("session token is not valid: log in again")
    m = row
    if m["revoked_at"] is not None:
        raise InvalidSession("session was logged out: log in again")
    if int(m["expires_at"]) <= now_us:
        raise InvalidSession("session has expired: log in again")
    if m["disabled"]:
        raise InvalidSession("this account is disabled")
    return Session(int(m["session_id"]), _user(row), int(m["expires_at"]))


def revoke_session(conn: Connection, session: Session, *, now_us: int) -> None:
    repo.revoke_session(conn, session.id, now_us)


# ---- second factor (TOTP) --------------------------------------------------------------------


def enrol_totp(
    conn: Connection,
    user: User,
    *,
    secret_key: str,
    secret: str,
    code: str,
    now_us: int,
    actor: str,
    source: str,
    replace: bool = False,
) -> None:
    """Confirm ``secret`` with a code from it and store it sealed (audited); the code's step
    counts as used. InvalidTotpCode when the code does not match (nothing stored). ``replace``
    (after a recovery code): the new secret takes the place of the one set up before."""
    step = totp.matching_step(secret, code, now_us)
    if step is None:
        raise InvalidTotpCode(
            "that code does not match: check the authenticator app's clock and enter the "
            "6-digit code it shows now",
            param="totp_code",
        )
    sealed = crypto.encrypt(secret_key, secret)
    if replace:
        repo.reset_totp(conn, user.id)
    if not repo.enrol_totp(conn, user.id, sealed=sealed, now_us=now_us, step=step):
        raise TotpAlreadyEnrolled("a second factor is already set up for this account")
    audit.record(
        from_connection(conn),
        now_us=now_us,
        actor=actor,
        source=source,
        action="user.totp_enrol",
        target=f"user:{user.id}",
        after={"email": user.email, "replaced": True} if replace else {"email": user.email},
    )


def set_totp_secret(
    conn: Connection, user: User, *, secret_key: str, secret: str, now_us: int, actor: str
) -> None:
    """Store ``secret`` as confirmed without a code (``tallygate create-admin`` prints it once
    for the operator's authenticator app), replacing any previous one (audited)."""
    repo.reset_totp(conn, user.id)
    repo.enrol_totp(
        conn,
        user.id,
        sealed=crypto.encrypt(secret_key, secret),
        now_us=now_us,
        step=totp.step_at(now_us) - totp.DRIFT_STEPS - 1,
    )
    audit.record(
        from_connection(conn),
        now_us=now_us,
        actor=actor,
        source="cli",
        action="user.totp_enrol",
        target=f"user:{user.id}",
        after={"email": user.email},
    )


def check_totp(conn: Connection, user: User, *, secret_key: str, code: str, now_us: int) -> None:
    """Accept ``code`` for ``user`` once: TotpNotEnrolled without a secret, TotpRequired for
    an empty code, InvalidTotpCode for a wrong, stale or already used one."""
    state = repo.totp_state(conn, user.id)
    if state is None or state["totp_enrolled_at"] is None or not state["totp_secret"]:
        raise TotpNotEnrolled(
            "this operator has no second factor set up yet: sign in on the console to set one up",
        )
    if not code.strip():
        raise TotpRequired(
            "operators sign in with a second factor: send totp_code, the 6-digit code from "
            "your authenticator app",
            param="totp_code",
        )
    secret = crypto.decrypt(secret_key, str(state["totp_secret"]))
    step = totp.matching_step(secret, code, now_us)
    if step is None:
        raise InvalidTotpCode(
            "invalid second-factor code: enter the 6-digit code your authenticator app shows now",
            param="totp_code",
        )
    if not repo.use_totp_step(conn, user.id, step):
        raise InvalidTotpCode(
            "this code was already used: wait for the next one",
            param="totp_code",
        )
