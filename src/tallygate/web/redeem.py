"""Redeem a code: what was credited, to which bucket, which routes it pays and when it expires —
or the precise reason it was not; and the account's redemption history. Failed claims count
toward the same failed-claim limit as the API's (credits/throttle.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from tallygate.credits import claims, service, throttle
from tallygate.credits.schemas import Redeemed
from tallygate.web.account import client_address
from tallygate.web.auth import SignedIn, SignedInForm, Viewer
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)


def _page(
    request: Request,
    v: Viewer,
    *,
    redeemed: Redeemed | None = None,
    error: str | None = None,
    status: int = 200,
    code: str = "",
) -> Response:
    assert v.user is not None
    with v.state.db.read() as conn:
        history = service.redemption_page(conn, user_id=v.user.id, cursor=None, limit=50)
    return page(
        request,
        v,
        "redeem.html",
        status_code=status,
        title="Redeem a code",
        nav="wallet",
        history=history.items,
        redeemed=redeemed,
        error=error,
        code=code,
    )


@router.get("/redeem")
def redeem_form(request: Request, v: SignedIn) -> Response:
    return _page(request, v)


def _claim(v: Viewer, address: str, code: str) -> Redeemed:
    assert v.user is not None
    s = v.state.settings
    with v.state.db.read() as conn:
        throttle.check(
            conn,
            user_id=v.user.id,
            address=address,
            now_us=v.state.now_us(),
            max_failures=s.redeem_max_failures,
            window_seconds=s.redeem_failure_window_seconds,
        )
    try:
        with v.state.db.begin() as conn:
            return claims.redeem(
                conn,
                v.state.ledger,
                user_id=v.user.id,
                text=code,
                secret_key=s.secret_key,
                client_address=address,
                now_us=v.state.now_us(),
            )
    except claims.ClaimRefused as refused:
        with v.state.db.begin() as conn:
            throttle.record_failure(
                conn,
                user_id=v.user.id,
                address=address,
                reason=refused.code,
                now_us=v.state.now_us(),
                window_seconds=s.redeem_failure_window_seconds,
            )
        raise


@router.post("/redeem")
def redeem(
    request: Request, v: SignedInForm, code: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    try:
        redeemed = _claim(v, client_address(request, v), code)
    except throttle.TooManyAttempts as exc:
        response = _page(request, v, error=str(exc.detail), status=429, code=code)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except claims.ClaimRefused as exc:
        return _page(request, v, error=exc.message, status=exc.status, code=code)
    return _page(request, v, redeemed=redeemed, status=201)
