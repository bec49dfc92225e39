"""The sandbox's test-mode checkout page, the return redirect (to the wallet's post-payment
panel) and the printable receipt.

Deliberately plain HTML with no outside assets; the full user pages live elsewhere. Every
sandbox page carries the TEST MODE banner."""

from __future__ import annotations

from html import escape
from typing import Annotated
from urllib.parse import parse_qs, quote

import anyio
from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tallygate.errors import NotFound
from tallygate.kit.money import to_decimal_string
from tallygate.payments import currency as cur
from tallygate.payments import orders, service, views
from tallygate.payments.endpoints import Providers
from tallygate.state import State
from tallygate.users.dependencies import CurrentUser

router = APIRouter(tags=["payments"], include_in_schema=False)
OrderId = Annotated[str, Path(min_length=5, max_length=40)]
BANNER = (
    '<p role="alert" style="background:#fde68a;padding:.5em;font-weight:bold">'
    "TEST MODE — sandbox payments move no real money</p>"
)
ACTIONS = {
    "pay": "Pay",
    "processing": "Pay with a delayed method (processing)",
    "fail": "Fail the payment",
    "cancel": "Cancel",
    "pending": "Leave it pending",
}


def _page(title: str, body: str, *, test_mode: bool, refresh: bool = False) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="2">' if refresh else ""
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>{meta}"
        f"</head><body>{BANNER if test_mode else ''}<h1>{escape(title)}</h1>{body}</body></html>"
    )


@router.get("/sandbox/checkout/{order_id}")
def checkout_page(order_id: OrderId, state: State, payments: Providers) -> HTMLResponse:
    payments.get("sandbox")
    with state.db.read() as conn:
        order = orders.get(conn, order_id)
    if order["provider"] != "sandbox":
        raise NotFound(f"no sandbox order {order_id}")
    amount = cur.minor_to_text(int(order["amount_minor"]), str(order["currency"]))
    status = str(order["status"])
    allowed = ["pay", "fail"] if status == "processing" else list(ACTIONS)
    if status not in ("pending", "processing"):
        allowed = []
    buttons = "".join(
        f'<form method=post action="/sandbox/checkout/{escape(order_id)}/{a}">'
        f'<button type=submit name=action value="{a}">'
        f"{'Confirm the payment' if status == 'processing' and a == 'pay' else ACTIONS[a]}"
        "</button></form>"
        for a in allowed
    )
    body = (
        f"<p>Order <code>{escape(order_id)}</code>: {escape(amount)} {escape(order['currency'])}"
        f" for the {views.LABELS[str(order['bucket'])]} "
        f"(credits {to_decimal_string(int(order['quoted_nanos']))} "
        f"{escape(order['bucket_currency'])}).</p><p>Status: <b>{escape(status)}</b></p>"
        f"{buttons or '<p>This order is closed; there is nothing to pay.</p>'}"
    )
    return _page("Sandbox checkout", body, test_mode=True)


@router.post("/sandbox/checkout/{order_id}/{action}")
async def checkout_action(
    order_id: OrderId,
    action: Annotated[str, Path(max_length=16)],
    request: Request,
    state: State,
    payments: Providers,
) -> Response:
    """A button of the checkout page (a form post; ``amount``/``currency`` fields let a
    test pay a different figure than the order's)."""
    payments.get("sandbox")
    form = parse_qs((await request.body()).decode(errors="replace"))
    amount = form.get("amount", [None])[0]
    currency = form.get("currency", [None])[0]
    order = await anyio.to_thread.run_sync(
        lambda: service.sandbox_act(
            state, public_id=order_id, action=action, amount=amount, currency=currency
        )
    )
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"id": order["public_id"], "status": order["status"]})
    return RedirectResponse(wallet_panel(order_id), status_code=303)


def wallet_panel(order_id: str, *, canceled: bool = False) -> str:
    """The post-payment state lives on the wallet itself (``/?order=``): it asks the provider,
    names the bucket and amount, and keeps confirming while the payment is pending."""
    return f"/?order={quote(order_id, safe='')}" + ("&canceled=1" if canceled else "")


@router.get("/payments/return/{order_id}")
def return_page(order_id: OrderId, request: Request) -> RedirectResponse:
    """The older return address (checkouts started before the wallet panel): a redirect there.
    The wallet checks that the order is the signed-in user's."""
    canceled = request.query_params.get("canceled") == "1"
    return RedirectResponse(wallet_panel(order_id, canceled=canceled), status_code=303)


@router.get("/payments/orders/{order_id}/receipt")
def receipt_page(order_id: OrderId, user: CurrentUser, state: State) -> HTMLResponse:
    with state.db.read() as conn:
        order = orders.get(conn, order_id, user_id=user.id)
        if order["paid_at"] is None:
            raise orders.OrderStateConflict(f"order {order_id} is not paid: no receipt")
        r = views.receipt(conn, order)
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
        for k, v in [
            ("Order", r.order_id),
            ("Paid", f"{r.paid} {r.currency}"),
            ("Provider", f"{r.provider} {r.provider_payment_id or ''}"),
            ("Rate", f"{r.rate} (bonus {r.bonus_rate})"),
            ("Credited", f"{r.credited} {r.bucket_currency} to {r.bucket_label}"),
            ("Ledger entry", r.entry.entry_id if r.entry else "—"),
            ("Paid at", r.paid_at.isoformat()),
            ("Refunded", f"{r.refunded} {r.currency} ({r.refund_state})"),
        ]
    )
    return _page("Top-up receipt", f"<table>{rows}</table>", test_mode=r.test_mode)
