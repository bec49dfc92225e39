"""Receipts for users (their own) and operators (anyone's), and the operators' route health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from tallygate.receipts import service
from tallygate.receipts.schemas import ReceiptOut, ReceiptPage, RouteHealthOut
from tallygate.state import ReadConn, State
from tallygate.users.dependencies import CurrentUser

router = APIRouter(prefix="/api/receipts", tags=["receipts"])
admin_router = APIRouter(tags=["admin"])

RequestId = Annotated[str, Path(max_length=64, description="the X-Request-Id of the request")]


@router.get("")
def my_receipts(
    user: CurrentUser,
    conn: ReadConn,
    state: State,
    status: Annotated[str | None, Query(max_length=16)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReceiptPage:
    return service.page(
        conn, state.ledger, user_id=user.id, status=status, model=model, cursor=cursor, limit=limit
    )


@router.get("/{request_id}")
def my_receipt(
    request_id: RequestId, user: CurrentUser, conn: ReadConn, state: State
) -> ReceiptOut:
    return service.get(conn, state.ledger, request_id, user.id)


@admin_router.get("/receipts")
def receipts(
    conn: ReadConn,
    state: State,
    user_id: Annotated[int | None, Query(ge=1)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ReceiptPage:
    return service.page(
        conn, state.ledger, user_id=user_id, status=status, model=model, cursor=cursor, limit=limit
    )


@admin_router.get("/receipts/{request_id}")
def receipt(request_id: RequestId, conn: ReadConn, state: State) -> ReceiptOut:
    return service.get(conn, state.ledger, request_id, None)


@admin_router.get("/route-health")
def route_health(request: Request) -> list[RouteHealthOut]:
    """This process's full route health: every channel × model with its circuit state."""
    runtime = request.app.state.gateway
    labels = {c.id: c.label for c in runtime.snapshot.channels}
    return [
        RouteHealthOut(
            channel_id=h.channel_id,
            channel=labels.get(h.channel_id, "?"),
            model=h.model,
            requests=h.requests,
            success_rate=h.success_rate,
            p50_ms=h.p50_ms,
            p95_ms=h.p95_ms,
            consecutive_failures=h.consecutive_failures,
            circuit=h.circuit,
            last_error=h.last_error,
        )
        for h in runtime.health.snapshot()
    ]
