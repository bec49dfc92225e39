"""The marketplace: models, prices per route type in each bucket's currency, route health over
the last 15 minutes, and which of the user's keys may use each offer; search by name or
description, filter by route type and by "one of my keys may use it"."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tallygate.catalog import marketplace
from tallygate.errors import BadRequest
from tallygate.web.auth import SignedIn
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)


ROUTE_TYPES = ("official", "routed")


def _offers(m: marketplace.MarketModel, route: str, mine: bool) -> list[marketplace.MarketOffer]:
    return [
        o
        for o in m.offers
        if (not route or o.route_type == route) and (not mine or o.usable_by_keys)
    ]


@router.get("/marketplace")
def market(
    request: Request,
    v: SignedIn,
    q: Annotated[str, Query(max_length=200)] = "",
    route: Annotated[str, Query(max_length=16)] = "",
    mine: Annotated[str, Query(max_length=4)] = "",
) -> Response:
    assert v.user is not None
    if route and route not in ROUTE_TYPES:
        raise BadRequest(f"unknown route type {route!r}: choose official or routed", param="route")
    with v.state.db.read() as conn:
        result = marketplace.marketplace(
            conn, user_id=v.user.id, now_us=v.state.now_us(), currencies=v.state.ledger.currencies
        )
    needle = q.strip().lower()
    models = [
        m.model_copy(update={"offers": _offers(m, route, bool(mine))})
        for m in result.models
        if not needle or needle in m.name.lower() or needle in m.description.lower()
    ]
    return page(
        request,
        v,
        "marketplace.html",
        title="Marketplace",
        nav="marketplace",
        models=[m for m in models if m.offers],
        q=q,
        route=route,
        mine=bool(mine),
        route_types=ROUTE_TYPES,
        filtered=bool(q.strip() or route or mine),
    )
