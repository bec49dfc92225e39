"""The one authentication dependency for the JSON APIs.

A request is authenticated by ``Authorization: Bearer <token>`` or, failing that, by the
``tallygate_session`` cookie set at login. ``CurrentUser`` is any live session's user;
``CurrentOperator`` additionally requires the operator role (403 otherwise)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tallygate.errors import Forbidden, Unauthorized
from tallygate.state import ReadConn, State
from tallygate.users import service
from tallygate.users.service import Session, User

SESSION_COOKIE = "tallygate_session"


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "malformed Authorization header: expected 'Bearer <token>'",
                code="invalid_authorization_header",
            )
        return token.strip()
    return request.cookies.get(SESSION_COOKIE) or None


def current_session(request: Request, conn: ReadConn, state: State) -> Session:
    token = presented_token(request)
    if token is None:
        raise Unauthorized(
            "authentication required: log in, or send Authorization: Bearer <token>",
            code="not_authenticated",
        )
    return service.resolve_session(conn, token, now_us=state.now_us())


CurrentSession = Annotated[Session, Depends(current_session)]


def current_user(session: CurrentSession) -> User:
    return session.user


CurrentUser = Annotated[User, Depends(current_user)]


def current_operator(user: CurrentUser) -> User:
    if not user.is_operator:
        raise Forbidden("this endpoint is for operators only", code="operator_required")
    return user


CurrentOperator = Annotated[User, Depends(current_operator)]
