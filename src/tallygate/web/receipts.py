"""Usage: the user's receipts (successful and failed) and a receipt with every field."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from tallygate.receipts import service as receipts
from tallygate.web.auth import SignedIn
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)


@router.get("/receipts")
def list_receipts(
    request: Request,
    v: SignedIn,
    status: Annotated[str | None, Query(max_length=16)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    assert v.user is not None
    with v.state.db.read() as conn:
        result = receipts.page(
            conn,
            v.state.ledger,
            user_id=v.user.id,
            status=status or None,
            model=model or None,
            cursor=cursor,
            limit=50,
        )
    return page(
        request,
        v,
        "receipts.html",
        title="Usage",
        nav="receipts",
        receipts=result.items,
        next_cursor=result.next_cursor,
        status=status or "",
        model=model or "",
    )


@router.get("/receipts/{request_id}")
def receipt(
    request: Request, request_id: Annotated[str, Path(max_length=64)], v: SignedIn
) -> Response:
    assert v.user is not None
    with v.state.db.read() as conn:
        r = receipts.get(conn, v.state.ledger, request_id, v.user.id)
    return page(request, v, "receipt.html", title=f"Receipt {r.request_id}", nav="receipts", r=r)
