"""The wallet, the user's home page: both buckets, debt, recent entries, a low-balance warning,
and — back from a checkout (``?order=``) — the post-payment state of that top-up (seed 002)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from tallygate.catalog import marketplace
from tallygate.errors import BadRequest, TallygateError
from tallygate.exports.statement import KIND_LABELS
from tallygate.kit.money import ceil_div
from tallygate.ledger import BUCKETS
from tallygate.payments import orders
from tallygate.payments import service as payments
from tallygate.payments import views as payment_views
from tallygate.wallet import service as wallet
from tallygate.web.auth import AnyViewer, LoginRequired, SignedIn, Viewer
from tallygate.web.params import MAX_ID
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)

LOW_BALANCE_NANOS = 1_000_000_000
"""Below one unit of the bucket's currency available, the wallet warns."""
RECENT = 10
TYPICAL_IN, TYPICAL_OUT = 1_000, 500
"""A typical request, for the low-balance warning: 1,000 tokens in, 500 out."""


def typical_costs(market: marketplace.Marketplace) -> dict[str, list[tuple[str, int]]]:
    """Per bucket: (model, cost of a typical request in nano-units), cheapest first, at most 3."""
    costs: dict[str, list[tuple[str, int]]] = {b: [] for b in BUCKETS}
    for model in market.models:
        for offer in model.offers:
            if offer.prices is None or not offer.enabled:
                continue
            total = TYPICAL_IN * offer.prices.input_per_m_nanos
            total += TYPICAL_OUT * offer.prices.output_per_m_nanos
            costs[offer.bucket].append((offer.api_model_id, ceil_div(total, 1_000_000)))
    return {b: sorted(c, key=lambda mc: mc[1])[:3] for b, c in costs.items()}


def cause_link(cause_type: str | None, cause_id: str | None) -> str | None:
    """Where the cause of a ledger entry can be read, when it has a page."""
    if not cause_id:
        return None
    if cause_type in ("request", "receipt"):
        return f"/receipts/{cause_id}"
    if cause_type == "order":
        return f"/?order={cause_id}"
    if cause_type == "refund":
        return f"/orders?refund={cause_id}"
    if cause_type == "redemption":
        return f"/redeem#redemption-{cause_id}"
    return None


def _post_payment(request: Request, v: Viewer, order_id: str) -> tuple[Any, Any]:
    """The order's post-payment state (asking the provider first while it is unfinished) and
    the order itself (its actions, refunds, transfer reference and reason)."""
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
        row = orders.get(conn, order_id)
        state = payment_views.payment_state(conn, v.state.ledger, row)
        return state, payment_views.order_out(conn, row, now_us=v.state.now_us())


ENTRY_KINDS = KIND_LABELS
"""Every kind a ledger entry can have, with what the ledger filter calls it (the statement's
names: one list, so the filter and the statement never disagree)."""


def day(text: str, field: str) -> dt.date | None:
    """A date field of a filter form: empty means no bound."""
    if not text.strip():
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(f"{field} must be a date like 2026-01-31", param=field) from None


@router.get("/")
def home(
    request: Request,
    v: AnyViewer,
    order: Annotated[str | None, Query(min_length=5, max_length=40)] = None,
    welcome: Annotated[str | None, Query(max_length=4)] = None,
    canceled: Annotated[str | None, Query(max_length=4)] = None,
) -> Response:
    if v.user is None:
        if order:
            raise LoginRequired()  # back from a checkout signed out: sign in, then the panel
        return RedirectResponse("/login", status_code=303)
    paid, paid_order = _post_payment(request, v, order) if order else (None, None)
    with v.state.db.read() as conn:
        w = wallet.get_wallet(conn, v.state.ledger, v.user.id)
        recent = {
            b: wallet.history(conn, user_id=v.user.id, bucket=b, limit=RECENT) for b in BUCKETS
        }
        expiring = wallet.expiring_credit(conn, v.user.id, v.state.now_us())
        low_buckets = [b for b in w.buckets if b.available_nanos < LOW_BALANCE_NANOS]
        typical = {}
        if low_buckets:
            typical = typical_costs(
                marketplace.marketplace(
                    conn,
                    user_id=v.user.id,
                    now_us=v.state.now_us(),
                    currencies=v.state.ledger.currencies,
                )
            )
    return page(
        request,
        v,
        "wallet.html",
        title="Wallet",
        nav="wallet",
        wallet=w,
        recent=recent,
        expiring=expiring,
        low=LOW_BALANCE_NANOS,
        typical=typical,
        paid=paid,
        paid_order=paid_order,
        left_checkout=bool(canceled),
        welcome=bool(welcome),
        cause_link=cause_link,
    )


@router.get("/ledger")
def ledger(
    request: Request,
    v: SignedIn,
    bucket: Annotated[str, Query(pattern="^(credit|routed)$")] = "credit",
    kind: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[str, Query(max_length=10, description="from this day (UTC)")] = "",
    until: Annotated[str, Query(max_length=10, description="up to and including this day")] = "",
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    assert v.user is not None
    if kind and kind not in ENTRY_KINDS:
        raise BadRequest(
            f"unknown entry kind {kind!r}: choose one of {', '.join(ENTRY_KINDS)}", param="kind"
        )
    first, last = day(since, "since"), day(until, "until")
    start = dt.datetime.combine(first, dt.time(), dt.UTC) if first else None
    end = dt.datetime.combine(last, dt.time(), dt.UTC) + dt.timedelta(days=1) if last else None
    with v.state.db.read() as conn:
        history = wallet.history(
            conn,
            user_id=v.user.id,
            bucket=bucket,
            kind=kind or None,
            since=start,
            until=end,
            cursor=cursor,
            limit=50,
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
        kinds=ENTRY_KINDS.items(),
        since=first.isoformat() if first else "",
        until=last.isoformat() if last else "",
        # the exports take a half-open range: up to the day after the last one shown
        export_until=f"{(last + dt.timedelta(days=1)).isoformat()}T00:00:00Z" if last else "",
        cause_link=cause_link,
    )
