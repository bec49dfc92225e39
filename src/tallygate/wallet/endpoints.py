"""The wallet: both buckets and the ledger history, for the user (``/api``) and for operators
(``/admin/api``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query

from tallygate.state import ReadConn, State
from tallygate.users.dependencies import CurrentUser
from tallygate.wallet import service
from tallygate.wallet.schemas import Bucket, LedgerPage, Wallet

router = APIRouter(prefix="/api/wallet", tags=["wallet"])
admin_router = APIRouter(prefix="/users", tags=["admin"])


@router.get("")
def wallet(user: CurrentUser, conn: ReadConn, state: State) -> Wallet:
    return service.get_wallet(conn, state.ledger, user.id)


@router.get("/ledger")
def ledger_history(
    user: CurrentUser,
    conn: ReadConn,
    bucket: Bucket = "credit",
    kind: Annotated[
        str | None, Query(max_length=32, description="only entries of this kind")
    ] = None,
    since: Annotated[
        dt.datetime | None, Query(description="inclusive lower bound (ISO 8601)")
    ] = None,
    until: Annotated[
        dt.datetime | None, Query(description="exclusive upper bound (ISO 8601)")
    ] = None,
    cursor: Annotated[
        int | None, Query(ge=1, description="next_cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> LedgerPage:
    return service.history(
        conn,
        user_id=user.id,
        bucket=bucket,
        kind=kind,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )


@admin_router.get("/{user_id}/wallet")
def user_wallet(user_id: Annotated[int, Path(ge=1)], conn: ReadConn, state: State) -> Wallet:
    return service.get_wallet(conn, state.ledger, user_id)
