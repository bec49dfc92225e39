"""The operator console's first pages (``/operator``; ``/admin`` is the operator JSON API):
users with their balances per bucket and debts, one user's wallet and ledger, route health.
Every page requires the operator role (403 otherwise)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from tallygate.errors import Forbidden
from tallygate.ledger import BUCKETS
from tallygate.users import service as users
from tallygate.wallet import service as wallet
from tallygate.web.auth import SignedIn, Viewer
from tallygate.web.render import page
from tallygate.web.wallet import cause_link

router = APIRouter(prefix="/operator", include_in_schema=False)


def operator_viewer(v: SignedIn) -> Viewer:
    if v.user is None or not v.user.is_operator:
        raise Forbidden("this page is for operators only", code="operator_required")
    return v


Operator = Annotated[Viewer, Depends(operator_viewer)]


@router.get("")
def users_page(
    request: Request, v: Operator, cursor: Annotated[int | None, Query(ge=1)] = None
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
        users=listing.items,
        wallets=wallets,
        next_cursor=listing.next_cursor,
    )


@router.get("/users/{user_id}")
def user_page(request: Request, v: Operator, user_id: Annotated[int, Path(ge=1)]) -> Response:
    with v.state.db.read() as conn:
        person = users.get_user(conn, user_id)
        w = wallet.get_wallet(conn, v.state.ledger, user_id)
        recent = {b: wallet.history(conn, user_id=user_id, bucket=b, limit=25) for b in BUCKETS}
    return page(
        request,
        v,
        "operator_user.html",
        title=f"User {person.email}",
        nav="operator",
        person=person,
        wallet=w,
        recent=recent,
        cause_link=cause_link,
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
        rows=rows,
        labels=labels,
    )
