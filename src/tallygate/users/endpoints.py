"""Login, logout and the current user (``/api``), and the user list (``/admin/api``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tallygate.credits.throttle import client_address
from tallygate.kit.clock import from_epoch_us
from tallygate.state import AppState, ReadConn, State, WriteConn
from tallygate.users import service
from tallygate.users.dependencies import (
    SESSION_COOKIE,
    CurrentSession,
    CurrentUser,
)
from tallygate.users.schemas import LoginRequest, LoginResponse, UserList, UserOut
from tallygate.web.security import LoginLimiter

router = APIRouter(prefix="/api", tags=["auth"])
admin_router = APIRouter(prefix="/users", tags=["admin"])


@router.post("/auth/login")
def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    state: State,
) -> LoginResponse:
    """Operators also send ``totp_code``: a missing, wrong or reused code is a 401 (a wrong one
    counts toward the login limit, like a wrong password on the sign-in page).

    The password is checked in a read transaction: the deliberately slow hashing never runs
    while a write transaction (on SQLite, the one write lock) is held."""
    with state.db.read() as conn:
        credentials = service.authenticate(conn, email=body.email, password=body.password)
    ttl = state.settings.session_ttl_seconds
    now_us = state.now_us()
    user = credentials.user
    limiter: LoginLimiter = request.app.state.login_limiter
    keys = [f"email:{user.email}", f"ip:{_address(request, state)}"]
    code = body.totp_code or ""
    if user.is_operator:
        with state.db.read() as conn:
            limiter.check(conn, keys, now_us)
    try:
        with state.db.begin() as conn:
            if user.is_operator:
                service.check_totp(
                    conn, user, secret_key=state.settings.secret_key, code=code, now_us=now_us
                )
            session = service.start_session(conn, credentials, now_us=now_us, ttl_seconds=ttl)
    except service.InvalidTotpCode:
        with state.db.begin() as conn:
            limiter.fail(conn, keys, now_us)
        raise
    assert session.token is not None
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=ttl,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return LoginResponse(
        token=session.token,
        expires_at=from_epoch_us(session.expires_at_us),
        user=UserOut.of(session.user),
    )


def _address(request: Request, state: AppState) -> str:
    return client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        state.settings.trusted_proxies,
    )


@router.post("/auth/logout", status_code=204)
def logout(session: CurrentSession, response: Response, conn: WriteConn, state: State) -> None:
    service.revoke_session(conn, session, now_us=state.now_us())
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")


@router.get("/me")
def me(user: CurrentUser) -> UserOut:
    return UserOut.of(user)


@admin_router.get("")
def list_users(
    conn: ReadConn,
    cursor: Annotated[
        int | None, Query(ge=1, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> UserList:
    page = service.list_users(conn, cursor=cursor, limit=limit)
    return UserList(
        items=[UserOut.of(u) for u in page.items],
        next_cursor=str(page.next_cursor) if page.next_cursor is not None else None,
    )
