"""The operator console's first pages (``/operator``; ``/admin`` is the operator JSON API):
users with their balances per bucket and debts, one user's wallet and ledger with a balance
adjustment form, route health. Every page requires the operator role (403 otherwise) with a
second factor set up (otherwise the browser is sent to set one up, and comes back); every form
its CSRF token."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from tallygate.adjustments import service as adjustments
from tallygate.adjustments.schemas import AdjustmentCreate
from tallygate.errors import Forbidden, TallygateError
from tallygate.ledger import BUCKETS
from tallygate.users import service as users
from tallygate.wallet import service as wallet
from tallygate.web.auth import SecondFactorRequired, SignedIn, SignedInForm, Viewer
from tallygate.web.params import MAX_ID
from tallygate.web.render import LABELS, page

router = APIRouter(prefix="/operator", include_in_schema=False)


def operator_viewer(v: SignedIn) -> Viewer:
    if v.user is None or not v.user.is_operator:
        raise Forbidden("this page is for operators only", code="operator_required")
    if not v.user.totp_enrolled:
        raise SecondFactorRequired()
    return v


Operator = Annotated[Viewer, Depends(operator_viewer)]


def operator_cause_link(cause_type: str | None, cause_id: str | None) -> str | None:
    """Where an operator reads the cause of a user's ledger entry: the console's top-up or
    refund page; None otherwise (an adjustment's reason is on the entry itself)."""
    if cause_id and cause_type == "order":
        return f"/operator/topups/{quote(cause_id)}"
    if cause_id and cause_type == "refund":
        return f"/operator/refunds/{quote(cause_id)}"
    return None


def operator_form(v: SignedInForm) -> Viewer:
    """An operator's form POST with a valid CSRF token (checked first: 403 otherwise)."""
    return operator_viewer(v)


OperatorForm = Annotated[Viewer, Depends(operator_form)]
Text = Annotated[str, Form(max_length=2000)]


@router.get("")
def users_page(
    request: Request, v: Operator, cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None
) -> Response:
    with v.state.db.read() as conn:
        listing = users.list_users(conn, cursor=cursor, limit=50)
        wallets = {u.id: wallet.get_wallet(conn, v.state.ledger, u.id) for u in listing.items}
    return page(
        request,
        v,
        "operator_users.html",
        title="Users",
        nav="operator",
        subnav="users",
        users=listing.items,
        wallets=wallets,
        next_cursor=listing.next_cursor,
    )


def _user_page(
    request: Request,
    v: Viewer,
    user_id: int,
    *,
    status_code: int = 200,
    error: str | None = None,
    adjusted: int | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    with v.state.db.read() as conn:
        person = users.get_user(conn, user_id)
        w = wallet.get_wallet(conn, v.state.ledger, user_id)
        recent = {b: wallet.history(conn, user_id=user_id, bucket=b, limit=25) for b in BUCKETS}
        done = None
        if adjusted is not None:
            found = adjustments.list_adjustments(
                conn, user_id=user_id, operator_view=True, limit=20
            )
            done = next((a for a in found.items if a.entry_id == adjusted), None)
    return page(
        request,
        v,
        "operator_user.html",
        status_code=status_code,
        title=f"User {person.email}",
        nav="operator",
        subnav="users",
        person=person,
        wallet=w,
        recent=recent,
        cause_link=operator_cause_link,
        error=error,
        adjusted=done,
        form=form or {"bucket": "credit", "amount": "", "reason": "", "request_id": ""},
        buckets=[(b, LABELS[b], v.state.ledger.currencies[b]) for b in BUCKETS],
    )


@router.get("/users/{user_id}")
def user_page(
    request: Request,
    v: Operator,
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    adjusted: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    return _user_page(request, v, user_id, adjusted=adjusted)


@router.post("/users/{user_id}/adjust")
def adjust(
    request: Request,
    v: OperatorForm,
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    bucket: Annotated[str, Form(max_length=16)] = "",
    amount: Annotated[str, Form(max_length=40)] = "",
    reason: Text = "",
    request_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Credit (positive) or debit (negative) one bucket, with a mandatory reason, through the
    adjustments service (a ledger entry and an audit event)."""
    assert v.user is not None
    form = {"bucket": bucket, "amount": amount, "reason": reason, "request_id": request_id}
    try:
        body = AdjustmentCreate(
            user_id=user_id,
            bucket=bucket or None,  # type: ignore[arg-type]
            amount=amount.strip(),
            reason=reason,
            request_id=request_id.strip() or None,
        )
        with v.state.db.begin() as conn:
            users.get_user(conn, user_id)
            made = adjustments.create_adjustment(
                conn, v.state.ledger, body=body, operator=v.user.email, now_us=v.state.now_us()
            )
    except ValidationError:
        return _user_page(
            request,
            v,
            user_id,
            status_code=400,
            error="choose Credit or Routed balance and enter a signed amount and a reason",
            form=form,
        )
    except TallygateError as exc:
        if isinstance(exc, users.UserNotFound):
            raise
        return _user_page(request, v, user_id, status_code=exc.status, error=exc.message, form=form)
    return RedirectResponse(
        f"/operator/users/{user_id}?adjusted={made.entry_id}#adjust", status_code=303
    )


@router.get("/route-health")
def route_health(request: Request, v: Operator) -> Response:
    runtime = request.app.state.gateway
    labels = {c.id: c.label for c in runtime.snapshot.channels}
    rows = sorted(runtime.health.snapshot(), key=lambda h: (labels.get(h.channel_id, "?"), h.model))
    return page(
        request,
        v,
        "operator_health.html",
        title="Route health",
        nav="operator",
        subnav="health",
        rows=rows,
        labels=labels,
    )
