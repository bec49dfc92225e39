"""API keys: the user's own (``/api/keys``) and every user's for operators (``/admin/api/keys``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from tallygate.keys import service
from tallygate.keys.schemas import KeyCreate, KeyCreated, KeyList, KeyOut, KeyRevoke, KeyUpdate
from tallygate.state import ReadConn, State, WriteConn
from tallygate.users.dependencies import CurrentOperator, CurrentUser

router = APIRouter(prefix="/api/keys", tags=["keys"])
admin_router = APIRouter(prefix="/keys", tags=["admin"])

KeyId = Annotated[int, Path(ge=1)]


@router.get("")
def list_keys(
    user: CurrentUser,
    conn: ReadConn,
    state: State,
    cursor: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> KeyList:
    return service.list_keys(
        conn,
        user_id=user.id,
        currencies=state.ledger.currencies,
        now_us=state.now_us(),
        cursor=cursor,
        limit=limit,
    )


@router.post("", status_code=201)
def create_key(body: KeyCreate, user: CurrentUser, conn: WriteConn, state: State) -> KeyCreated:
    return service.create_key(
        conn, user_id=user.id, body=body, currencies=state.ledger.currencies, now_us=state.now_us()
    )


@router.get("/{key_id}")
def get_key(key_id: KeyId, user: CurrentUser, conn: ReadConn, state: State) -> KeyOut:
    return service.get_key(
        conn, key_id, user_id=user.id, currencies=state.ledger.currencies, now_us=state.now_us()
    )


@router.patch("/{key_id}")
def update_key(
    key_id: KeyId, body: KeyUpdate, user: CurrentUser, conn: WriteConn, state: State
) -> KeyOut:
    return service.update_key(
        conn,
        key_id,
        user_id=user.id,
        body=body,
        currencies=state.ledger.currencies,
        now_us=state.now_us(),
    )


@router.post("/{key_id}/revoke")
def revoke_key(key_id: KeyId, user: CurrentUser, conn: WriteConn, state: State) -> KeyOut:
    return service.revoke_key(
        conn, key_id, user_id=user.id, currencies=state.ledger.currencies, now_us=state.now_us()
    )


@admin_router.get("")
def admin_list_keys(
    conn: ReadConn,
    state: State,
    user_id: Annotated[int | None, Query(ge=1, description="only this user's keys")] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> KeyList:
    return service.list_keys(
        conn,
        user_id=user_id,
        currencies=state.ledger.currencies,
        now_us=state.now_us(),
        cursor=cursor,
        limit=limit,
    )


@admin_router.post("/{key_id}/revoke")
def admin_revoke_key(
    key_id: KeyId,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
    body: KeyRevoke | None = None,
) -> KeyOut:
    return service.revoke_key(
        conn,
        key_id,
        user_id=None,
        currencies=state.ledger.currencies,
        now_us=state.now_us(),
        operator=operator.email,
        reason=body.reason if body else "",
    )
