"""Top-ups for users (``/api/payments``), operators (``/admin/api/payments``), provider
webhooks, and the sandbox's test-mode checkout page."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import RowMapping

from tallygate.payments import jobs, orders, refunds, review, service, views, webhook_service
from tallygate.payments import repository as repo
from tallygate.payments.registry import Payments, get_payments
from tallygate.payments.schemas import (
    Approve,
    JobList,
    OrderCreate,
    OrderList,
    OrderOut,
    PaymentState,
    Receipt,
    RefundCreate,
    RefundList,
    RefundOut,
    Review,
    ShortfallDecision,
    TopUpOptions,
    TransferSubmit,
)
from tallygate.state import AppState, ReadConn, State, WriteConn
from tallygate.users.dependencies import CurrentOperator, CurrentUser

router = APIRouter(prefix="/api/payments", tags=["payments"])
admin_router = APIRouter(prefix="/payments", tags=["admin"])

Providers = Annotated[Payments, Depends(get_payments)]
OrderId = Annotated[str, Path(min_length=5, max_length=40)]


def _out(state: AppState, order: RowMapping) -> OrderOut:
    with state.db.read() as conn:
        return views.order_out(
            conn, repo.order_by_id(conn, int(order["id"])), now_us=state.now_us()
        )


@router.get("/options")
def options(state: State, payments: Providers) -> TopUpOptions:
    s = state.settings
    return TopUpOptions(
        buckets=[
            TopUpOptions.BucketOption(
                bucket=b,  # type: ignore[arg-type]
                label=views.LABELS[b],
                currency=c,
                rates=orders.rates_for(s, b, c),
                bonus_tiers=[(str(m), str(r)) for m, r in s.topup_bonus_tiers.get(b, [])],
            )
            for b, c in state.ledger.currencies.items()
        ],
        providers=payments.enabled(),
        test_mode=payments.sandbox is not None,
        min=s.topup_min,
        max=s.topup_max,
        presets=s.topup_presets,
        bank_instructions=s.bank_instructions,
    )


@router.post("/orders", status_code=201)
def create_order(
    body: OrderCreate, user: CurrentUser, state: State, payments: Providers, request: Request
) -> OrderOut:
    order = service.start_order(
        state, payments, user_id=user.id, body=body, base_url=str(request.base_url)
    )
    return _out(state, order)


@router.get("/orders")
def list_orders(
    user: CurrentUser,
    conn: ReadConn,
    state: State,
    status: Annotated[str | None, Query(max_length=24)] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrderList:
    return _list(conn, state, user_id=user.id, status=status, cursor=cursor, limit=limit)


def _list(
    conn: ReadConn,
    state: AppState,
    *,
    user_id: int | None,
    status: str | None,
    cursor: int | None,
    limit: int,
) -> OrderList:
    rows = repo.list_orders(conn, user_id=user_id, status=status, before_id=cursor, limit=limit + 1)
    items = [views.order_out(conn, r, now_us=state.now_us()) for r in rows[:limit]]
    more = len(rows) > limit
    return OrderList(items=items, next_cursor=str(rows[limit - 1]["id"]) if more else None)


@router.get("/orders/{order_id}")
def get_order(order_id: OrderId, user: CurrentUser, conn: ReadConn, state: State) -> OrderOut:
    return views.order_out(conn, orders.get(conn, order_id, user_id=user.id), now_us=state.now_us())


@router.get("/orders/{order_id}/state")
def payment_state(
    order_id: OrderId, user: CurrentUser, state: State, payments: Providers
) -> PaymentState:
    """The post-payment state: asks the provider first while the order is unfinished."""
    with state.db.read() as conn:
        order = orders.get(conn, order_id, user_id=user.id)
    service.confirm(state, payments, order)
    with state.db.read() as conn:
        return views.payment_state(conn, state.ledger, orders.get(conn, order_id))


@router.get("/orders/{order_id}/receipt")
def receipt(order_id: OrderId, user: CurrentUser, conn: ReadConn) -> Receipt:
    order = orders.get(conn, order_id, user_id=user.id)
    if order["status"] != "paid" and order["paid_at"] is None:
        raise orders.OrderStateConflict(f"order {order_id} is {order['status']}: no receipt")
    return views.receipt(conn, order)


@router.post("/orders/{order_id}/cancel")
def cancel(order_id: OrderId, user: CurrentUser, state: State) -> OrderOut:
    return _out(state, service.cancel(state, public_id=order_id, user_id=user.id))


@router.post("/orders/{order_id}/transfer")
def submit_transfer(
    order_id: OrderId, body: TransferSubmit, user: CurrentUser, state: State
) -> OrderOut:
    order = service.submit_transfer(
        state, public_id=order_id, user_id=user.id, reference=body.reference
    )
    return _out(state, order)


# ---- webhooks (no session: the signature is the authentication) -------------------------------


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request, state: State, payments: Providers) -> dict[str, object]:
    payload = await request.body()
    header = request.headers.get("stripe-signature")
    answer = await anyio.to_thread.run_sync(
        webhook_service.receive_stripe, state, payments, payload, header
    )
    _wake_jobs(request)
    return answer


@router.post("/webhooks/wechat")
async def wechat_webhook(request: Request, state: State, payments: Providers) -> dict[str, str]:
    payload = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    answer = await anyio.to_thread.run_sync(
        webhook_service.receive_wechat, state, payments, payload, headers
    )
    _wake_jobs(request)
    return answer


def _wake_jobs(request: Request) -> None:
    """The event is stored with its job: let this process's worker run it now."""
    worker = getattr(request.app.state, "payment_jobs", None)
    if worker is not None:
        worker.wake()


# ---- operators --------------------------------------------------------------------------------


@admin_router.get("/orders")
def admin_list_orders(
    conn: ReadConn,
    state: State,
    user_id: Annotated[int | None, Query(ge=1)] = None,
    status: Annotated[str | None, Query(max_length=24)] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrderList:
    return _list(conn, state, user_id=user_id, status=status, cursor=cursor, limit=limit)


@admin_router.get("/orders/{order_id}")
def admin_get_order(order_id: OrderId, conn: ReadConn, state: State) -> OrderOut:
    return views.order_out(conn, orders.get(conn, order_id), now_us=state.now_us())


@admin_router.post("/orders/{order_id}/approve")
def approve(
    order_id: OrderId, body: Approve, operator: CurrentOperator, conn: WriteConn, state: State
) -> OrderOut:
    order = review.approve(
        conn,
        state.ledger,
        order_id,
        amount=body.amount,
        currency=body.currency,
        reason=body.reason,
        override=body.override,
        operator=operator.email,
        now_us=state.now_us(),
        second_review_above=state.settings.bank_second_review_above,
    )
    return views.order_out(conn, order, now_us=state.now_us())


@admin_router.post("/orders/{order_id}/reject")
def reject(
    order_id: OrderId, body: Review, operator: CurrentOperator, conn: WriteConn, state: State
) -> OrderOut:
    order = review.reject(
        conn,
        state.ledger,
        order_id,
        reason=body.reason,
        operator=operator.email,
        now_us=state.now_us(),
    )
    return views.order_out(conn, order, now_us=state.now_us())


@admin_router.post("/orders/{order_id}/override")
def override(
    order_id: OrderId, body: Review, operator: CurrentOperator, conn: WriteConn, state: State
) -> OrderOut:
    order = review.override_mismatch(
        conn,
        state.ledger,
        order_id,
        reason=body.reason,
        operator=operator.email,
        now_us=state.now_us(),
    )
    return views.order_out(conn, order, now_us=state.now_us())


@admin_router.post("/orders/{order_id}/refunds", status_code=201)
def start_refund(
    order_id: OrderId,
    body: RefundCreate,
    operator: CurrentOperator,
    state: State,
    payments: Providers,
) -> RefundOut:
    order, record = service.start_refund(
        state, payments, public_id=order_id, body=body, operator=operator.email
    )
    with state.db.read() as conn:
        return views.refund_out(conn, order, record)


@admin_router.get("/refunds")
def list_refunds(
    conn: ReadConn,
    shortfall_state: Annotated[str | None, Query(max_length=24)] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RefundList:
    rows = repo.list_refunds(
        conn, shortfall_state=shortfall_state, before_id=cursor, limit=limit + 1
    )
    items = [
        views.refund_out(conn, repo.order_by_id(conn, int(r["order_id"])), r) for r in rows[:limit]
    ]
    more = len(rows) > limit
    return RefundList(items=items, next_cursor=str(rows[limit - 1]["id"]) if more else None)


@admin_router.post("/refunds/{refund_id}/decision")
def decide(
    refund_id: Annotated[str, Path(min_length=4, max_length=40)],
    body: ShortfallDecision,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
) -> RefundOut:
    record = refunds.decide_shortfall(
        conn,
        state.ledger,
        refund_id,
        decision=body.decision,
        reason=body.reason,
        operator=operator.email,
        now_us=state.now_us(),
    )
    return views.refund_out(conn, repo.lock_order(conn, int(record["order_id"])), record)


@admin_router.get("/jobs")
def list_jobs(
    conn: ReadConn,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    return views.job_list(jobs.list_jobs(conn, status=status, limit=limit))


@admin_router.post("/jobs/{job_id}/requeue")
def requeue_job(
    job_id: Annotated[int, Path(ge=1)],
    body: Review,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
) -> dict[str, object]:
    jobs.requeue_dead(
        conn,
        state.ledger,
        job_id,
        reason=body.reason,
        operator=operator.email,
        now_us=state.now_us(),
    )
    return {"id": job_id, "status": "queued"}
