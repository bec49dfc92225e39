"""Operators' one-time recovery codes: the way back in when the authenticator app is lost.

Ten codes are printed once (``tallygate create-admin``, ``tallygate reset-totp``); only an
HMAC-SHA-256 of each, keyed by the server's secret key, is stored, so a leaked database does
not leak them. A code is accepted once (a conditional UPDATE), in place of the 6-digit code,
and its use is audited; the sign-in then asks for a new authenticator app before the console
opens (docs/decisions/0018-operator-recovery-codes.md)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Connection

from tallygate.audit import service as audit
from tallygate.ledger.tx import from_connection
from tallygate.users import repository as repo
from tallygate.users.service import InvalidTotpCode, User

COUNT = 10
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""32 symbols without 0/O and 1/I: 16 of them are 80 random bits."""
LENGTH = 16


def new_code() -> str:
    """``ABCD-EFGH-JKLM-NPQR``: 80 random bits in four groups, easy to copy by hand."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, LENGTH, 4))


def normalize(code: str) -> str:
    return "".join(code.split()).replace("-", "").upper()


def looks_like(code: str) -> bool:
    """A recovery code rather than a 6-digit TOTP code."""
    text = normalize(code)
    return len(text) == LENGTH and all(c in ALPHABET for c in text)


def digest(secret_key: str, code: str) -> str:
    key = (secret_key + ":recovery-code").encode()
    return hmac.new(key, normalize(code).encode(), hashlib.sha256).hexdigest()


def issue(
    conn: Connection, user: User, *, secret_key: str, now_us: int, actor: str, source: str
) -> list[str]:
    """Ten new codes for ``user``, replacing any earlier ones (audited); shown once."""
    codes = [new_code() for _ in range(COUNT)]
    repo.replace_recovery_codes(conn, user.id, [digest(secret_key, c) for c in codes], now_us)
    audit.record(
        from_connection(conn),
        now_us=now_us,
        actor=actor,
        source=source,
        action="user.recovery_codes_issue",
        target=f"user:{user.id}",
        after={"email": user.email, "codes": COUNT},
    )
    return codes


def use(conn: Connection, user: User, *, secret_key: str, code: str, now_us: int) -> int:
    """Accept ``code`` once for ``user`` (audited): the number of codes left. InvalidTotpCode
    for a wrong or already used one."""
    if not repo.use_recovery_code(conn, user.id, digest(secret_key, code), now_us):
        raise InvalidTotpCode(
            "that recovery code is not valid or was already used", param="totp_code"
        )
    left = repo.recovery_codes_left(conn, user.id)
    audit.record(
        from_connection(conn),
        now_us=now_us,
        actor=user.email,
        source="operator",
        action="user.recovery_code_use",
        target=f"user:{user.id}",
        after={"codes_left": left},
    )
    return left
