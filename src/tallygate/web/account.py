"""Sign up, sign in and sign out with email and password (plain forms, CSRF-checked).

Operators take a second step: after their password, the browser holds only a short-lived
sealed challenge cookie (who, until when, where to go next, and a new secret while enrolling)
and is sent to the code page; the session is created only once the TOTP code is accepted. An
operator without a second factor is shown a new secret (and its ``otpauth://`` URI) and must
confirm a code from it before the console opens; that confirmation shows ten one-time recovery
codes once. A recovery code in place of the TOTP code leads to setting up a new app
(docs/decisions/0018-operator-recovery-codes.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from tallygate.credits import throttle
from tallygate.errors import TallygateError
from tallygate.kit import crypto
from tallygate.users import recovery, totp
from tallygate.users import service as users
from tallygate.users.dependencies import SESSION_COOKIE
from tallygate.web import security
from tallygate.web.auth import AnyViewer, CsrfChecked, Viewer
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)
Field = Annotated[str, Form(max_length=500)]
CHALLENGE_COOKIE = "tallygate_2fa"
CHALLENGE_SECONDS = 300
"""How long the code page waits after the password before asking for it again."""


def safe_next(target: str | None) -> str:
    """Only a path on this server: never ``//elsewhere`` or ``https://elsewhere``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def client_address(request: Request, v: Viewer) -> str:
    return throttle.client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        v.state.settings.trusted_proxies,
    )


def _signed_in(request: Request, v: Viewer, session: users.Session, target: str) -> Response:
    response = RedirectResponse(safe_next(target), status_code=303)
    _set_session_cookie(request, v, response, session)
    return response


def _set_session_cookie(
    request: Request, v: Viewer, response: Response, session: users.Session
) -> None:
    assert session.token is not None
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=v.state.settings.session_ttl_seconds,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@router.get("/login")
def login_form(request: Request, v: AnyViewer, next: str = "/") -> Response:
    if v.user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, v, "login.html", title="Sign in", next=safe_next(next), email="")


def _limit_keys(request: Request, v: Viewer, email: str) -> list[str]:
    return [f"email:{email.strip().lower()}", f"ip:{client_address(request, v)}"]


def _too_many(
    request: Request, v: Viewer, template: str, exc: security.TooManyLogins, **ctx: object
) -> Response:
    response = page(request, v, template, status_code=429, error=exc.detail, **ctx)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


@router.post("/login")
def login(
    request: Request, v: CsrfChecked, email: Field = "", password: Field = "", next: Field = "/"
) -> Response:
    limiter: security.LoginLimiter = request.app.state.login_limiter
    keys = _limit_keys(request, v, email)
    now_us = v.state.now_us()
    ctx = {"title": "Sign in", "next": safe_next(next), "email": email}
    try:
        with v.state.db.read() as conn:
            limiter.check(conn, keys, now_us)
            credentials = users.authenticate(conn, email=email, password=password)
    except security.TooManyLogins as exc:
        return _too_many(request, v, "login.html", exc, **ctx)
    except users.InvalidCredentials as exc:
        with v.state.db.begin() as conn:
            limiter.fail(conn, keys, now_us)
        return page(request, v, "login.html", status_code=401, error=exc.message, **ctx)
    if credentials.user.is_operator:
        challenge = Challenge(
            user_id=credentials.user.id,
            email=credentials.user.email,
            expires_at_us=now_us + CHALLENGE_SECONDS * 1_000_000,
            next=safe_next(next),
            secret=None if credentials.user.totp_enrolled else totp.new_secret(),
            rehash=credentials.rehash,
        )
        target = "/login/totp" if credentials.user.totp_enrolled else "/login/totp/enrol"
        response = RedirectResponse(target, status_code=303)
        _set_challenge(request, v, response, challenge)
        return response
    with v.state.db.begin() as conn:
        session = users.start_session(
            conn,
            credentials,
            now_us=v.state.now_us(),
            ttl_seconds=v.state.settings.session_ttl_seconds,
        )
    return _signed_in(request, v, session, next)


# ---- the operator's second step ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """Password accepted, code pending: sealed (AES-GCM) in the challenge cookie."""

    user_id: int
    email: str
    expires_at_us: int
    next: str
    secret: str | None
    """While enrolling: the new secret the code must come from."""
    rehash: str | None = None
    recovered: bool = False
    """A recovery code was accepted: the new secret replaces the old one once confirmed."""


def _challenge_key(v: Viewer) -> str:
    return v.state.settings.secret_key + ":login-challenge"


def _set_challenge(request: Request, v: Viewer, response: Response, c: Challenge) -> None:
    body = json.dumps(
        {
            "u": c.user_id,
            "e": c.email,
            "x": c.expires_at_us,
            "n": c.next,
            "s": c.secret,
            "r": c.rehash,
            "c": c.recovered,
        }
    )
    response.set_cookie(
        CHALLENGE_COOKIE,
        crypto.encrypt(_challenge_key(v), body),
        max_age=CHALLENGE_SECONDS,
        path="/login",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def _challenge(request: Request, v: Viewer) -> Challenge | None:
    """The live challenge of this browser; None when absent, forged or expired."""
    sealed = request.cookies.get(CHALLENGE_COOKIE)
    if not sealed:
        return None
    try:
        data = json.loads(crypto.decrypt(_challenge_key(v), sealed))
        c = Challenge(
            user_id=int(data["u"]),
            email=str(data["e"]),
            expires_at_us=int(data["x"]),
            next=safe_next(data["n"]),
            secret=str(data["s"]) if data.get("s") else None,
            rehash=str(data["r"]) if data.get("r") else None,
            recovered=bool(data.get("c")),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if c.expires_at_us <= v.state.now_us():
        return None
    return c


def _again(request: Request, v: Viewer) -> Response:
    """No live challenge: back to the password, saying why."""
    return page(
        request,
        v,
        "login.html",
        status_code=401,
        title="Sign in",
        next="/",
        email="",
        error="your sign-in step expired: enter your email and password again",
    )


def _totp_page(
    request: Request, v: Viewer, c: Challenge, *, status_code: int = 200, error: str | None = None
) -> Response:
    enrol = c.secret is not None
    return page(
        request,
        v,
        "login_totp.html",
        status_code=status_code,
        title="Set up your second factor" if enrol else "Enter your code",
        enrol=enrol,
        email=c.email,
        secret=c.secret,
        uri=totp.provisioning_uri(c.secret, c.email) if c.secret else None,
        recovered=c.recovered,
        error=error,
    )


def _enrol_signed_in_operator(request: Request, v: Viewer, next: str) -> Response:
    """An operator's session without a second factor (an install older than it): the session
    already proved the password, so the setup step starts from it and returns to ``next``."""
    assert v.user is not None
    challenge = Challenge(
        user_id=v.user.id,
        email=v.user.email,
        expires_at_us=v.state.now_us() + CHALLENGE_SECONDS * 1_000_000,
        next=safe_next(next),
        secret=totp.new_secret(),
    )
    response = RedirectResponse("/login/totp/enrol", status_code=303)
    _set_challenge(request, v, response, challenge)
    return response


@router.get("/login/totp")
def totp_form(request: Request, v: AnyViewer, next: str = "/") -> Response:
    c = _challenge(request, v)
    if c is None:
        if v.user is not None and v.user.is_operator and not v.user.totp_enrolled:
            return _enrol_signed_in_operator(request, v, next)
        if v.user is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        target = safe_next(next)
        back = "/login" if target == "/" else f"/login?next={quote(target, safe='')}"
        return RedirectResponse(back, status_code=303)
    if c.secret is not None:
        return RedirectResponse("/login/totp/enrol", status_code=303)
    return _totp_page(request, v, c)


@router.get("/login/totp/enrol")
def totp_enrol_form(request: Request, v: AnyViewer) -> Response:
    c = _challenge(request, v)
    if c is None:
        return RedirectResponse("/login", status_code=303)
    if c.secret is None:
        return RedirectResponse("/login/totp", status_code=303)
    return _totp_page(request, v, c)


def _recovered(request: Request, v: Viewer, c: Challenge) -> Response:
    """A recovery code was accepted: set up a new authenticator app before the console opens
    (the old secret stays until a code from the new one confirms it)."""
    again = Challenge(
        user_id=c.user_id,
        email=c.email,
        expires_at_us=v.state.now_us() + CHALLENGE_SECONDS * 1_000_000,
        next=c.next,
        secret=totp.new_secret(),
        rehash=c.rehash,
        recovered=True,
    )
    response = RedirectResponse("/login/totp/enrol", status_code=303)
    _set_challenge(request, v, response, again)
    return response


@router.post("/login/totp")
def totp_submit(request: Request, v: CsrfChecked, code: Field = "") -> Response:
    """Check the code (or confirm the new secret with it); only then create the session."""
    c = _challenge(request, v)
    if c is None:
        return _again(request, v)
    limiter: security.LoginLimiter = request.app.state.login_limiter
    keys = _limit_keys(request, v, c.email)
    now_us = v.state.now_us()
    secret_key = v.state.settings.secret_key
    codes: list[str] = []
    try:
        with v.state.db.read() as conn:
            limiter.check(conn, keys, now_us)
        with v.state.db.begin() as conn:
            user = users.get_user(conn, c.user_id)
            if user.disabled or not user.is_operator:
                return _again(request, v)
            if c.secret is not None:
                users.enrol_totp(
                    conn,
                    user,
                    secret_key=secret_key,
                    secret=c.secret,
                    code=code,
                    now_us=now_us,
                    actor=user.email,
                    source="operator",
                    replace=c.recovered,
                )
                codes = recovery.issue(
                    conn,
                    user,
                    secret_key=secret_key,
                    now_us=now_us,
                    actor=user.email,
                    source="operator",
                )
            elif recovery.looks_like(code):
                recovery.use(conn, user, secret_key=secret_key, code=code, now_us=now_us)
                return _recovered(request, v, c)
            else:
                users.check_totp(conn, user, secret_key=secret_key, code=code, now_us=now_us)
            session = users.start_session(
                conn,
                users.Credentials(user, c.rehash),
                now_us=now_us,
                ttl_seconds=v.state.settings.session_ttl_seconds,
            )
            if v.session is not None and v.session.user.id == user.id:
                # the session that started the setup is replaced by the one it opened
                users.revoke_session(conn, v.session, now_us=now_us)
    except security.TooManyLogins as exc:
        response = _totp_page(request, v, c, status_code=429, error=exc.detail)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except users.TotpAlreadyEnrolled:
        return _again(request, v)
    except users.TotpNotEnrolled:
        return RedirectResponse("/login", status_code=303)
    except TallygateError as exc:
        with v.state.db.begin() as conn:
            limiter.fail(conn, keys, now_us)
        return _totp_page(request, v, c, status_code=exc.status, error=exc.message)
    if codes:  # a new second factor: its recovery codes, shown this once, then the console
        response = page(
            request,
            v,
            "login_recovery_codes.html",
            title="Save your recovery codes",
            codes=codes,
            next=safe_next(c.next),
        )
        _set_session_cookie(request, v, response, session)
    else:
        response = _signed_in(request, v, session, c.next)
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(CHALLENGE_COOKIE, path="/login", httponly=True, samesite="lax")
    return response


@router.get("/signup")
def signup_form(request: Request, v: AnyViewer) -> Response:
    if v.user is not None:
        return RedirectResponse("/", status_code=303)
    return page(request, v, "signup.html", title="Create your account", email="")


@router.post("/signup")
def signup(request: Request, v: CsrfChecked, email: Field = "", password: Field = "") -> Response:
    now_us = v.state.now_us()
    try:
        with v.state.db.begin() as conn:
            user = users.create_user(
                conn,
                v.state.ledger,
                email=email,
                password=password,
                now_us=now_us,
                actor="signup",
                source="web",
                client_address=client_address(request, v),
            )
            session = users.create_session(
                conn, user, now_us=now_us, ttl_seconds=v.state.settings.session_ttl_seconds
            )
    except TallygateError as exc:
        return page(
            request,
            v,
            "signup.html",
            status_code=exc.status,
            title="Create your account",
            email=email,
            error=exc.message,
        )
    return _signed_in(request, v, session, "/?welcome=1")


@router.post("/logout")
def logout(v: CsrfChecked) -> Response:
    if v.session is not None:
        with v.state.db.begin() as conn:
            users.revoke_session(conn, v.session, now_us=v.state.now_us())
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response
