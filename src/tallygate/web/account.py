"""Sign up, sign in and sign out with email and password (plain forms, CSRF-checked)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from tallygate.credits import throttle
from tallygate.errors import TallygateError
from tallygate.users import service as users
from tallygate.users.dependencies import SESSION_COOKIE
from tallygate.web import security
from tallygate.web.auth import AnyViewer, CsrfChecked, Viewer
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)
Field = Annotated[str, Form(max_length=500)]


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
    return response


@router.get("/login")
def login_form(request: Request, v: AnyViewer, next: str = "/") -> Response:
    if v.user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, v, "login.html", title="Sign in", next=safe_next(next), email="")


@router.post("/login")
def login(
    request: Request, v: CsrfChecked, email: Field = "", password: Field = "", next: Field = "/"
) -> Response:
    limiter: security.LoginLimiter = request.app.state.login_limiter
    keys = [f"email:{email.strip().lower()}", f"ip:{client_address(request, v)}"]
    now = v.state.now_us() / 1_000_000
    ctx = {"title": "Sign in", "next": safe_next(next), "email": email}
    try:
        limiter.check(keys, now)
        with v.state.db.read() as conn:
            credentials = users.authenticate(conn, email=email, password=password)
    except security.TooManyLogins as exc:
        response = page(request, v, "login.html", status_code=429, error=exc.detail, **ctx)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except users.InvalidCredentials as exc:
        limiter.fail(keys, now)
        return page(request, v, "login.html", status_code=401, error=exc.message, **ctx)
    with v.state.db.begin() as conn:
        session = users.start_session(
            conn,
            credentials,
            now_us=v.state.now_us(),
            ttl_seconds=v.state.settings.session_ttl_seconds,
        )
    return _signed_in(request, v, session, next)


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
