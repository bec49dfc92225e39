"""The wallet, the user's home page: both buckets, debt, recent entries, a low-balance warning,
and — back from a checkout (``?order=``) — the post-payment state of that top-up (seed 002)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from tallygate.errors import TallygateError
from tallygate.ledger import BUCKETS
from tallygate.payments import orders
from tallygate.payments import service as payments
from tallygate.payments import views as payment_views
from tallygate.wallet import service as wallet
from tallygate.web.auth import AnyViewer, SignedIn, Viewer
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)

LOW_BALANCE_NANOS = 1_000_000_000
"""Below one unit of the bucket's currency available, the wallet warns."""
RECENT = 10


def cause_link(cause_type: str | None, cause_id: str | None) -> str | None:
    """Where the cause of a ledger entry can be read, when it has a page."""
    if not cause_id:
        return None
    if cause_type in ("request", "receipt"):
        return f"/receipts/{cause_id}"
    if cause_type == "order":
        return f"/?order={cause_id}"
    return None


def _post_payment(request: Request, v: Viewer, order_id: str) -> Any:
    assert v.user is not None
    with v.state.db.read() as conn:
        order = orders.get(conn, order_id, user_id=v.user.id)
    providers = getattr(request.app.state, "payments", None)
    if providers is not None:
        try:
            payments.confirm(v.state, providers, order)
        except TallygateError:
            pass  # the provider could not be asked now: the page shows the order as it stands
    with v.state.db.read() as conn:
        return payment_views.payment_state(conn, v.state.ledger, orders.get(conn, order_id))


@router.get("/")
def home(
    request: Request,
    v: AnyViewer,
    order: Annotated[str | None, Query(min_length=5, max_length=40)] = None,
    welcome: Annotated[str | None, Query(max_length=4)] = None,
) -> Response:
    if v.user is None:
        return RedirectResponse("/login", status_code=303)
    paid = _post_payment(request, v, order) if order else None
    with v.state.db.read() as conn:
        w = wallet.get_wallet(conn, v.state.ledger, v.user.id)
        recent = {
            b: wallet.history(conn, user_id=v.user.id, bucket=b, limit=RECENT) for b in BUCKETS
        }
    return page(
        request,
        v,
        "wallet.html",
        title="Wallet",
        nav="wallet",
        wallet=w,
        recent=recent,
        low=LOW_BALANCE_NANOS,
        paid=paid,
        welcome=bool(welcome),
        cause_link=cause_link,
    )


@router.get("/ledger")
def ledger(
    request: Request,
    v: SignedIn,
    bucket: Annotated[str, Query(pattern="^(credit|routed)$")] = "credit",
    kind: Annotated[str | None, Query(max_length=32)] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    assert v.user is not None
    with v.state.db.read() as conn:
        history = wallet.history(
            conn, user_id=v.user.id, bucket=bucket, kind=kind or None, cursor=cursor, limit=50
        )
    return page(
        request,
        v,
        "ledger.html",
        title="Ledger",
        nav="wallet",
        history=history,
        bucket=bucket,
        kind=kind or "",
        cause_link=cause_link,
    )
