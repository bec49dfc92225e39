"""CSRF tokens and the login rate limit.

CSRF: every form carries ``csrf_token``. Signed in, the token is an HMAC of the session token
under the server's secret key, so it is per session and needs no storage; signed out (sign-in
and sign-up forms) it is an HMAC of a random ``tallygate_csrf`` cookie (double submit). A POST
whose token does not match is refused with 403 before anything else happens.

Login limit: ``MAX_FAILURES`` failed sign-ins within ``WINDOW_SECONDS``, per email and per client
address, refuse further attempts (even correct ones) with 429 until the oldest failure ages out.
It lives in the process (one sliding window per key); several processes each keep their own."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
from collections import deque

from starlette.exceptions import HTTPException

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
    """Sliding windows of failure times (seconds) per key, e.g. ``email:a@b`` or ``ip:1.2.3.4``."""

    def __init__(self, max_failures: int = MAX_FAILURES, window: int = WINDOW_SECONDS) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def check(self, keys: list[str], now: float) -> None:
        with self._lock:
            waits = [
                max(1, math.ceil(times[0] + self.window - now))
                for times in (self._live(k, now) for k in keys)
                if len(times) >= self.max_failures
            ]
        if waits:
            raise TooManyLogins(max(waits))

    def fail(self, keys: list[str], now: float) -> None:
        with self._lock:
            for key in keys:
                self._live(key, now).append(now)
