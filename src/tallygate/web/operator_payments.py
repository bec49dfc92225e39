"""Console pages: top-ups (filtered list, the review queue, payment webhook jobs not done with a
requeue for dead ones, one order with its history, lot usage and receipts; approve / reject /
override a review, start a refund) and refunds (every
field, decide a shortfall). Operators only; every form CSRF-checked; refusals are readable
pages that change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import Connection, RowMapping, or_, select

from tallygate.errors import BadRequest, TallygateError
from tallygate.models.payments import payment_orders
from tallygate.payments import currency as cur
from tallygate.payments import jobs, orders, refunds, review, views
from tallygate.payments import repository as repo
from tallygate.payments import service as payments
from tallygate.payments.schemas import OrderOut, RefundCreate, RefundOut
from tallygate.receipts import service as receipts
from tallygate.receipts.schemas import ReceiptOut
from tallygate.users import service as users
from tallygate.web.operator import Operator, OperatorForm, Text
from tallygate.web.params import MAX_ID
from tallygate.web.render import page

router = APIRouter(prefix="/operator", include_in_schema=False)

STATES = (
    "pending",
    "processing",
    "awaiting_review",
    "paid",
    "expired",
    "canceled",
    "failed",
    "rejected",
)
PROVIDERS = ("sandbox", "stripe", "wechat", "bank")
SHORTFALL_STATES = ("none", "debt", "awaiting_decision", "written_off", "canceled")
JOBS_SHOWN = 50
OrderId = Annotated[str, Path(min_length=5, max_length=40)]
RefundId = Annotated[str, Path(min_length=4, max_length=40)]
OC = payment_orders.c


class ReasonRequired(BadRequest):
    code = "reason_required"


def _orders(
    conn: Connection,
    *,
    state: str | None,
    provider: str | None,
    user_id: int | None,
    before_id: int | None,
    limit: int,
) -> list[RowMapping]:
    stmt = select(payment_orders).order_by(OC.id.desc()).limit(limit)
    if state:
        stmt = stmt.where(OC.status == state)
    if provider:
        stmt = stmt.where(OC.provider == provider)
    if user_id is not None:
        stmt = stmt.where(OC.user_id == user_id)
    if before_id is not None:
        stmt = stmt.where(OC.id < before_id)
    return list(conn.execute(stmt).mappings())


def _review_queue(conn: Connection) -> list[RowMapping]:
    """Bank transfers waiting for an operator, and flagged orders not (yet) credited."""
    stmt = (
        select(payment_orders)
        .where(
            or_(
                OC.status == "awaiting_review",
                OC.flag.is_not(None) & OC.status.not_in(("paid", "rejected")),
            )
        )
        .order_by(OC.id)
        .limit(200)
    )
    return list(conn.execute(stmt).mappings())


def _open_jobs(conn: Connection) -> list[RowMapping]:
    """Payment webhook jobs not done: dead ones (an operator must requeue them) first, then
    those still queued or running (retrying after a failure, or not run yet)."""
    dead = jobs.list_jobs(conn, status="dead", limit=JOBS_SHOWN)
    waiting = jobs.list_jobs(conn, status="queued", limit=JOBS_SHOWN) + jobs.list_jobs(
        conn, status="running", limit=JOBS_SHOWN
    )
    return dead + sorted(waiting, key=lambda j: -int(j["id"]))


@router.get("/topups")
def topups(
    request: Request,
    v: Operator,
    state: Annotated[str, Query(max_length=24)] = "",
    provider: Annotated[str, Query(max_length=16)] = "",
    user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    requeued: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    return _topups_page(
        request,
        v,
        state=state,
        provider=provider,
        user_id=user_id,
        cursor=cursor,
        notice=f"Job {requeued} is queued again: a worker runs it now." if requeued else None,
    )


def _topups_page(
    request: Request,
    v: Operator,
    *,
    state: str = "",
    provider: str = "",
    user_id: int | None = None,
    cursor: int | None = None,
    error: str | None = None,
    status_code: int = 200,
    notice: str | None = None,
    job_form: dict[str, str] | None = None,
) -> Response:
    now_us = v.state.now_us()
    if state and state not in STATES:
        error, state = f"unknown state {state!r}: showing every state", ""
    if provider and provider not in PROVIDERS:
        error, provider = f"unknown provider {provider!r}: showing every provider", ""
    with v.state.db.read() as conn:
        rows = _orders(
            conn, state=state, provider=provider, user_id=user_id, before_id=cursor, limit=51
        )
        queue = [views.order_out(conn, r, now_us=now_us) for r in _review_queue(conn)]
        items = [views.order_out(conn, r, now_us=now_us) for r in rows[:50]]
        emails = _emails(conn, {o.user_id for o in items + queue})
        open_jobs = _open_jobs(conn)
    more = len(rows) > 50
    return page(
        request,
        v,
        "operator_topups.html",
        status_code=400 if error and status_code == 200 else status_code,
        title="Top-ups",
        nav="operator",
        subnav="topups",
        error=error,
        notice=notice,
        jobs=open_jobs,
        max_attempts=jobs.MAX_ATTEMPTS,
        job_form=job_form or {},
        queue=queue,
        orders=items,
        emails=emails,
        states=STATES,
        providers=PROVIDERS,
        f={"state": state, "provider": provider, "user_id": user_id or ""},
        next_cursor=int(rows[49]["id"]) if more else None,
    )


def _emails(conn: Connection, ids: set[int]) -> dict[int, str]:
    return {i: users.get_user(conn, i).email for i in ids}


def _order_page(
    request: Request,
    v: Operator,
    order_id: str,
    *,
    status_code: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
    done: str | None = None,
) -> Response:
    with v.state.db.read() as conn:
        order = views.order_out(conn, orders.get(conn, order_id), now_us=v.state.now_us())
        person = users.get_user(conn, order.user_id)
        used_by = _receipts(conn, v, order)
        refundable = _refundable(conn, order)
    return page(
        request,
        v,
        "operator_topup.html",
        status_code=status_code,
        title=f"Top-up {order.id}",
        nav="operator",
        subnav="topups",
        o=order,
        person=person,
        used_by=used_by,
        refundable=refundable,
        error=error,
        done=done,
        form=form or {},
    )


def _receipts(conn: Connection, v: Operator, order: OrderOut) -> list[ReceiptOut]:
    """The receipts of the requests that spent this order's credit."""
    if order.usage is None:
        return []
    return [receipts.get(conn, v.state.ledger, rid, None) for rid in order.usage.receipts]


def _refundable(conn: Connection, order: OrderOut) -> str | None:
    """How much of the payment can still be refunded (payment currency): None when nothing
    can (not paid, or refunded in full)."""
    if order.status != "paid":
        return None
    row = repo.order_by_public_id(conn, order.id)
    assert row is not None
    left = refunds.refundable_minor(conn, row)
    return cur.minor_to_text(left, order.currency) if left > 0 else None


@router.post("/payment-jobs/{job_id}/requeue")
def requeue_job(
    request: Request,
    v: OperatorForm,
    job_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    reason: Text = "",
) -> Response:
    """Give a dead webhook job another run now (reason required; audited as
    ``payment_job.requeue``), as ``POST /admin/api/jobs/{id}/requeue`` does."""
    assert v.user is not None
    try:
        _require(reason, "a reason is required to requeue a job")
        with v.state.db.begin() as conn:
            jobs.requeue_dead(
                conn,
                v.state.ledger,
                job_id,
                reason=reason.strip(),
                operator=v.user.email,
                now_us=v.state.now_us(),
            )
    except TallygateError as exc:
        return _topups_page(
            request,
            v,
            status_code=exc.status,
            error=exc.message,
            job_form={"job_id": str(job_id), "reason": reason},
        )
    return RedirectResponse(f"/operator/topups?requeued={job_id}#jobs", status_code=303)


@router.get("/topups/{order_id}")
def topup(
    request: Request,
    v: Operator,
    order_id: OrderId,
    done: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    return _order_page(request, v, order_id, done=done or None)


@router.post("/topups/{order_id}/approve")
def approve(
    request: Request,
    v: OperatorForm,
    order_id: OrderId,
    amount: Annotated[str, Form(max_length=40)] = "",
    currency: Annotated[str, Form(max_length=8)] = "",
    reason: Text = "",
    override: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Credit a bank transfer with the amount seen on the statement (reason required)."""
    assert v.user is not None
    form = {"amount": amount, "currency": currency, "reason": reason}
    try:
        _require(reason, "a reason is required to approve a transfer")
        if not amount.strip():
            raise ReasonRequired("enter the amount seen on the bank statement", param="amount")
        with v.state.db.begin() as conn:
            review.approve(
                conn,
                v.state.ledger,
                order_id,
                amount=amount.strip(),
                currency=currency.strip() or orders.get(conn, order_id)["currency"],
                reason=reason.strip(),
                override=override == "1",
                operator=v.user.email,
                now_us=v.state.now_us(),
            )
    except orders.OrderNotFound:
        raise
    except TallygateError as exc:
        return _order_page(
            request, v, order_id, status_code=exc.status, error=exc.message, form=form
        )
    return RedirectResponse(f"/operator/topups/{order_id}?done=approved", status_code=303)


@router.post("/topups/{order_id}/reject")
def reject(request: Request, v: OperatorForm, order_id: OrderId, reason: Text = "") -> Response:
    return _decide(
        request,
        v,
        order_id,
        review.reject,
        reason,
        missing="a reason is required to reject a top-up",
        done="rejected",
        form_field="reject_reason",
    )


@router.post("/topups/{order_id}/override")
def override(request: Request, v: OperatorForm, order_id: OrderId, reason: Text = "") -> Response:
    """Credit what the provider reported for an order flagged ``amount_mismatch``."""
    return _decide(
        request,
        v,
        order_id,
        review.override_mismatch,
        reason,
        missing="a reason is required to credit the reported amount",
        done="credited",
    )


def _decide(
    request: Request,
    v: Operator,
    order_id: str,
    decision: Callable[..., Any],
    reason: str,
    *,
    missing: str,
    done: str,
    form_field: str | None = None,
) -> Response:
    """A review decision that needs only a reason (reject, credit the reported amount): made
    in one transaction by the review service, or the order page again with the refusal."""
    assert v.user is not None
    try:
        _require(reason, missing)
        with v.state.db.begin() as conn:
            decision(
                conn,
                v.state.ledger,
                order_id,
                reason=reason.strip(),
                operator=v.user.email,
                now_us=v.state.now_us(),
            )
    except orders.OrderNotFound:
        raise
    except TallygateError as exc:
        form = {form_field: reason} if form_field else None
        return _order_page(
            request, v, order_id, status_code=exc.status, error=exc.message, form=form
        )
    return RedirectResponse(f"/operator/topups/{order_id}?done={done}", status_code=303)


@router.post("/topups/{order_id}/refund")
def start_refund(
    request: Request,
    v: OperatorForm,
    order_id: OrderId,
    amount: Annotated[str, Form(max_length=40)] = "",
    reason: Text = "",
    mode: Annotated[str, Form(max_length=16)] = "provider",
    idempotency_key: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Refund (part of) a paid order: through the provider, or record one made outside."""
    assert v.user is not None
    form = {"amount": amount, "refund_reason": reason, "mode": mode}
    try:
        _require(reason, "a reason is required for every refund")
        body = RefundCreate(
            amount=amount.strip() or None,
            reason=reason.strip(),
            mode=mode,  # type: ignore[arg-type]
            idempotency_key=idempotency_key or None,
        )
        _order, record = payments.start_refund(
            v.state,
            request.app.state.payments,
            public_id=order_id,
            body=body,
            operator=v.user.email,
        )
    except ValidationError:
        return _order_page(
            request,
            v,
            order_id,
            status_code=400,
            error="enter an amount (or leave it empty for the rest), a reason and how to refund",
            form=form,
        )
    except orders.OrderNotFound:
        raise
    except TallygateError as exc:
        return _order_page(
            request, v, order_id, status_code=exc.status, error=exc.message, form=form
        )
    return RedirectResponse(f"/operator/refunds/{record['public_id']}", status_code=303)


def _require(text: str, message: str) -> None:
    if not text.strip():
        raise ReasonRequired(message, param="reason")


# ---- refunds ----------------------------------------------------------------------------------


@router.get("/refunds")
def refund_list(
    request: Request,
    v: Operator,
    shortfall: Annotated[str, Query(max_length=24)] = "",
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    error = None
    if shortfall and shortfall not in SHORTFALL_STATES:
        error, shortfall = f"unknown shortfall state {shortfall!r}: showing every refund", ""
    with v.state.db.read() as conn:
        rows = repo.list_refunds(
            conn, shortfall_state=shortfall or None, before_id=cursor, limit=51
        )
        items = [
            views.refund_out(conn, repo.order_by_id(conn, int(r["order_id"])), r) for r in rows[:50]
        ]
    return page(
        request,
        v,
        "operator_refunds.html",
        status_code=400 if error else 200,
        title="Refunds",
        nav="operator",
        subnav="refunds",
        error=error,
        refunds=items,
        shortfall=shortfall,
        shortfall_states=SHORTFALL_STATES,
        next_cursor=int(rows[49]["id"]) if len(rows) > 50 else None,
    )


def _refund_page(
    request: Request,
    v: Operator,
    refund_id: str,
    *,
    status_code: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    with v.state.db.read() as conn:
        record = repo.refund_by(conn, public_id=refund_id)
        if record is None:
            raise refunds.RefundNotFound(f"no refund {refund_id}")
        order_row = repo.order_by_id(conn, int(record["order_id"]))
        r: RefundOut = views.refund_out(conn, order_row, record)
        used_by = [receipts.get(conn, v.state.ledger, rid, None) for rid in r.receipts]
        person = users.get_user(conn, int(order_row["user_id"]))
    return page(
        request,
        v,
        "operator_refund.html",
        status_code=status_code,
        title=f"Refund {r.id}",
        nav="operator",
        subnav="refunds",
        r=r,
        person=person,
        used_by=used_by,
        error=error,
        form=form or {},
    )


@router.get("/refunds/{refund_id}")
def refund(request: Request, v: Operator, refund_id: RefundId) -> Response:
    return _refund_page(request, v, refund_id)


@router.post("/refunds/{refund_id}/decision")
def decide(
    request: Request,
    v: OperatorForm,
    refund_id: RefundId,
    decision: Annotated[str, Form(max_length=16)] = "",
    reason: Text = "",
) -> Response:
    """Decide what the user could not cover: book it as debt, or write it off."""
    assert v.user is not None
    form = {"decision": decision, "reason": reason}
    try:
        if decision not in ("debt", "write_off"):
            raise ReasonRequired("choose debt or write off", param="decision")
        _require(reason, "a reason is required for the decision")
        with v.state.db.begin() as conn:
            refunds.decide_shortfall(
                conn,
                v.state.ledger,
                refund_id,
                decision=decision,
                reason=reason.strip(),
                operator=v.user.email,
                now_us=v.state.now_us(),
            )
    except refunds.RefundNotFound:
        raise
    except TallygateError as exc:
        return _refund_page(
            request, v, refund_id, status_code=exc.status, error=exc.message, form=form
        )
    return RedirectResponse(f"/operator/refunds/{refund_id}", status_code=303)
