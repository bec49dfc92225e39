"""Login, logout and the current user (``/api``), and the user list (``/admin/api``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tallygate.kit.clock import from_epoch_us
from tallygate.state import ReadConn, State, WriteConn
from tallygate.users import service
from tallygate.users.dependencies import (
    SESSION_COOKIE,
    CurrentSession,
    CurrentUser,
    VerifiedCredentials,
)
from tallygate.users.schemas import LoginResponse, UserList, UserOut

router = APIRouter(prefix="/api", tags=["auth"])
admin_router = APIRouter(prefix="/users", tags=["admin"])


@router.post("/auth/login")
def login(
    credentials: VerifiedCredentials,
    request: Request,
    response: Response,
    conn: WriteConn,
    state: State,
) -> LoginResponse:
    ttl = state.settings.session_ttl_seconds
    session = service.start_session(conn, credentials, now_us=state.now_us(), ttl_seconds=ttl)
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
