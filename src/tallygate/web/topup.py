"""Top-up: choose the bucket, an amount (presets) and a provider, see what will be credited,
then pay at the provider's checkout (the sandbox's test-mode page in demo mode). After paying,
the wallet (``/?order=<id>``) shows the post-payment state of the order."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from tallygate.errors import NotFound, TallygateError
from tallygate.payments import orders, views
from tallygate.payments import repository as repo
from tallygate.payments import service as payments
from tallygate.payments.registry import Payments
from tallygate.payments.schemas import OrderCreate
from tallygate.web.auth import SignedIn, SignedInForm, Viewer
from tallygate.web.render import LABELS, page

router = APIRouter(include_in_schema=False)
PROVIDERS = {
    "sandbox": "Sandbox (test mode: no real money)",
    "stripe": "Card (Stripe)",
    "wechat": "WeChat Pay",
    "bank": "Bank transfer (reviewed by an operator)",
}


def _form(
    request: Request,
    v: Viewer,
    *,
    error: str | None = None,
    status: int = 200,
    bucket: str = "routed",
    amount: str = "",
) -> Response:
    providers: Payments = request.app.state.payments
    s = v.state.settings
    buckets = [
        {
            "bucket": b,
            "label": LABELS[b],
            "currency": c,
            "rates": orders.rates_for(s, b, c),
        }
        for b, c in v.state.ledger.currencies.items()
    ]
    return page(
        request,
        v,
        "topup.html",
        status_code=status,
        title="Top up",
        nav="wallet",
        buckets=buckets,
        providers=[(p, PROVIDERS.get(p, p)) for p in providers.enabled()],
        test_mode=providers.sandbox is not None,
        presets=s.topup_presets,
        minimum=s.topup_min,
        maximum=s.topup_max,
        error=error,
        bucket=bucket,
        amount=amount,
    )


@router.get("/topup")
def topup_form(request: Request, v: SignedIn, bucket: str = "routed") -> Response:
    return _form(request, v, bucket=bucket if bucket in LABELS else "routed")


@router.post("/topup")
def start_topup(
    request: Request,
    v: SignedInForm,
    bucket: Annotated[str, Form(max_length=16)] = "",
    amount: Annotated[str, Form(max_length=40)] = "",
    provider: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    assert v.user is not None
    try:
        body = OrderCreate(bucket=bucket, amount=amount.strip(), provider=provider)  # type: ignore[arg-type]
        order = payments.start_order(
            v.state,
            request.app.state.payments,
            user_id=v.user.id,
            body=body,
            base_url=str(request.base_url),
        )
    except ValidationError:
        return _form(request, v, error="choose a bucket, an amount and a provider", status=400)
    except TallygateError as exc:
        return _form(request, v, error=exc.message, status=exc.status, bucket=bucket, amount=amount)
    target = order["checkout_url"] or f"/?order={order['public_id']}"
    return RedirectResponse(str(target), status_code=303)


@router.get("/orders")
def my_orders(
    request: Request,
    v: SignedIn,
    refund: Annotated[str | None, Query(min_length=3, max_length=60)] = None,
) -> Response:
    """My top-ups; ``?refund=<id>`` (a ledger entry's cause) goes to that refund's order."""
    assert v.user is not None
    if refund is not None:
        with v.state.db.read() as conn:
            record = repo.refund_by(conn, public_id=refund)
            order = repo.order_by_id(conn, int(record["order_id"])) if record else None
        if order is None or int(order["user_id"]) != v.user.id:
            raise NotFound(f"no refund {refund}")
        return RedirectResponse(f"/orders/{order['public_id']}#refund-{refund}", status_code=303)
    with v.state.db.read() as conn:
        rows = repo.list_orders(conn, user_id=v.user.id, status=None, before_id=None, limit=100)
        items = [views.order_out(conn, r, now_us=v.state.now_us()) for r in rows]
    return page(request, v, "orders.html", title="Top-ups", nav="wallet", orders=items)


@router.get("/orders/{order_id}")
def my_order(
    request: Request, v: SignedIn, order_id: Annotated[str, Path(min_length=5, max_length=40)]
) -> Response:
    """One order: its state and what to do next, what it credited, and how much of that credit
    requests have used (with their receipts)."""
    assert v.user is not None
    with v.state.db.read() as conn:
        order = views.order_out(
            conn, orders.get(conn, order_id, user_id=v.user.id), now_us=v.state.now_us()
        )
    return page(request, v, "order.html", title=f"Top-up {order.id}", nav="wallet", o=order)
