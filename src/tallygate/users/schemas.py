"""Request and response bodies for login, sessions and users."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from tallygate.kit.clock import from_epoch_us
from tallygate.users.service import User


class LoginRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    totp_code: str | None = Field(
        default=None,
        max_length=16,
        description="Operators only: the 6-digit code from their authenticator app",
    )


class UserOut(BaseModel):
    id: int
    email: str
    role: Literal["user", "operator"]
    display_name: str
    disabled: bool
    created_at: dt.datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            role=user.role,  # type: ignore[arg-type]
            display_name=user.display_name,
            disabled=user.disabled,
            created_at=from_epoch_us(user.created_at_us),
        )


class LoginResponse(BaseModel):
    token: str
    """The session token: sent back as the ``tallygate_session`` cookie, or as
    ``Authorization: Bearer <token>``. Shown once; only its hash is stored."""
    token_type: Literal["bearer"] = "bearer"
    expires_at: dt.datetime
    user: UserOut


class UserList(BaseModel):
    items: list[UserOut]
    next_cursor: str | None
    """Pass as ``cursor`` to get the next page; null on the last page."""
