"""The marketplace: models, prices per route type in each bucket's currency, route health over
the last 15 minutes, and which of the user's keys may use each offer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tallygate.catalog import marketplace
from tallygate.web.auth import SignedIn
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)


@router.get("/marketplace")
def market(
    request: Request, v: SignedIn, q: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    assert v.user is not None
    with v.state.db.read() as conn:
        result = marketplace.marketplace(
            conn, user_id=v.user.id, now_us=v.state.now_us(), currencies=v.state.ledger.currencies
        )
    needle = q.strip().lower()
    models = [
        m
        for m in result.models
        if not needle or needle in m.name.lower() or needle in m.description.lower()
    ]
    return page(
        request, v, "marketplace.html", title="Marketplace", nav="marketplace", models=models, q=q
    )
