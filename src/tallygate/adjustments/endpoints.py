"""Adjustments: operators make and list them (``/admin/api/adjustments``); users see their
own, and those correcting one of their requests (``/api/receipts/{request_id}/adjustments``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from tallygate.adjustments import service
from tallygate.adjustments.schemas import AdjustmentCreate, AdjustmentList, AdjustmentOut
from tallygate.state import ReadConn, State, WriteConn
from tallygate.users.dependencies import CurrentOperator, CurrentUser

router = APIRouter(prefix="/api", tags=["adjustments"])
admin_router = APIRouter(prefix="/adjustments", tags=["admin"])

Cursor = Annotated[int | None, Query(ge=1, description="next_cursor of the previous page")]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/adjustments")
def my_adjustments(
    user: CurrentUser, conn: ReadConn, cursor: Cursor = None, limit: Limit = 50
) -> AdjustmentList:
    return service.list_adjustments(
        conn, user_id=user.id, operator_view=False, cursor=cursor, limit=limit
    )


@router.get("/receipts/{request_id}/adjustments")
def receipt_adjustments(
    request_id: Annotated[str, Path(max_length=64)], user: CurrentUser, conn: ReadConn
) -> AdjustmentList:
    """Adjustments an operator made to correct this request, with their reasons."""
    return service.for_receipt(conn, request_id, user_id=user.id)


@admin_router.post("", status_code=201)
def create_adjustment(
    body: AdjustmentCreate, operator: CurrentOperator, conn: WriteConn, state: State
) -> AdjustmentOut:
    return service.create_adjustment(
        conn, state.ledger, body=body, operator=operator.email, now_us=state.now_us()
    )


@admin_router.get("")
def list_adjustments(
    conn: ReadConn,
    user_id: Annotated[int | None, Query(ge=1)] = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> AdjustmentList:
    return service.list_adjustments(
        conn,
        user_id=user_id,
        request_id=request_id,
        operator_view=True,
        cursor=cursor,
        limit=limit,
    )
