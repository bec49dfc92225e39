"""CSRF tokens and the login rate limit.

CSRF: every form carries ``csrf_token``. Signed in, the token is an HMAC of the session token
under the server's secret key, so it is per session and needs no storage; signed out (sign-in
and sign-up forms) it is an HMAC of a random ``tallygate_csrf`` cookie (double submit). A POST
whose token does not match is refused with 403 before anything else happens.

Login limit: ``MAX_FAILURES`` failed sign-ins within ``WINDOW_SECONDS``, per email and per client
address, refuse further attempts (even correct ones) with 429 until the oldest failure ages out.
Wrong second-factor codes count as failures too. Failures are rows in the database, so every
process (and a restart) sees the same count."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets

from sqlalchemy import Connection
from starlette.exceptions import HTTPException

from tallygate.users import repository as users_repo

CSRF_COOKIE = "tallygate_csrf"
MAX_FAILURES = 10
WINDOW_SECONDS = 600


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(secret: str, *, session_token: str | None, anon_cookie: str | None) -> str:
    if session_token:
        material = "session:" + session_token
    elif anon_cookie:
        material = "anon:" + anon_cookie
    else:
        return ""
    return hmac.new(secret.encode(), material.encode(), hashlib.sha256).hexdigest()


class CsrfRefused(HTTPException):
    def __init__(self) -> None:
        super().__init__(
            403,
            detail="this form has expired or did not come from Tallygate: reload the page and "
            "try again",
        )


def check_csrf(
    secret: str, given: str | None, *, session_token: str | None, anon_cookie: str | None
) -> None:
    expected = csrf_token(secret, session_token=session_token, anon_cookie=anon_cookie)
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise CsrfRefused()


class TooManyLogins(HTTPException):
    def __init__(self, retry_after: int) -> None:
        minutes = max(1, (retry_after + 59) // 60)
        super().__init__(
            429,
            detail=f"too many failed sign-ins: try again in {minutes} minute"
            f"{'s' if minutes != 1 else ''}",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class LoginLimiter:
    """Failed sign-ins per key (``email:a@b``, ``ip:1.2.3.4``), stored in the database
    (``login_failures``) so every process counts the same failures; a wrong password and a
    wrong second-factor code both count."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: int = WINDOW_SECONDS) -> None:
        self.max_failures = max_failures
        self.window = window

    def check(self, conn: Connection, keys: list[str], now_us: int) -> None:
        """Raise TooManyLogins when any key has used up its failures within the window."""
        window_us = self.window * 1_000_000
        counts = users_repo.failures_since(conn, keys, now_us - window_us)
        waits = [
            max(1, math.ceil((oldest + window_us - now_us) / 1_000_000))
            for n, oldest in counts.values()
            if n >= self.max_failures
        ]
        if waits:
            raise TooManyLogins(max(waits))

    def fail(self, conn: Connection, keys: list[str], now_us: int) -> None:
        """Count one failure for each key (and forget this key's failures that aged out)."""
        users_repo.forget_failures_before(conn, keys, now_us - self.window * 1_000_000)
        users_repo.record_failures(conn, keys, now_us)
