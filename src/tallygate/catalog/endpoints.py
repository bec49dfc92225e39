"""Catalog: operators' models, prices and sync (``/admin/api``) and the marketplace (``/api``).

Model names may contain ``/`` (``meta/llama-3``), so the name is a path parameter that may
span segments; the more specific routes are declared first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from tallygate.catalog import marketplace as market
from tallygate.catalog import service, sync
from tallygate.catalog.dependencies import ApprovedDocument, PreviewDocument
from tallygate.catalog.schemas import (
    ModelCreate,
    ModelOut,
    ModelUpdate,
    OfferPut,
    PriceHistory,
    RouteType,
    SyncDiff,
    SyncResult,
)
from tallygate.catalog.service import Actor
from tallygate.state import ReadConn, State, WriteConn
from tallygate.users.dependencies import CurrentOperator, CurrentUser

router = APIRouter(prefix="/api/marketplace", tags=["marketplace"])
admin_router = APIRouter(tags=["admin"])

ModelName = Annotated[str, Path(description="public model name (may contain '/')")]


@router.get("")
def marketplace(user: CurrentUser, conn: ReadConn, state: State) -> market.Marketplace:
    return market.marketplace(
        conn, user_id=user.id, now_us=state.now_us(), currencies=state.ledger.currencies
    )


@admin_router.get("/models")
def list_models(conn: ReadConn, state: State) -> list[ModelOut]:
    return service.list_models(conn, state.ledger.currencies)


@admin_router.post("/models", status_code=201)
def create_model(
    body: ModelCreate, operator: CurrentOperator, conn: WriteConn, state: State
) -> ModelOut:
    return service.create_model(
        conn,
        body,
        actor=Actor(operator.email),
        now_us=state.now_us(),
        currencies=state.ledger.currencies,
    )


@admin_router.get("/models/{name:path}/prices")
def price_history(name: ModelName, conn: ReadConn) -> PriceHistory:
    return service.price_history(conn, name)


@admin_router.put("/models/{name:path}/offers/{route_type}")
def put_offer(
    name: ModelName,
    route_type: RouteType,
    body: OfferPut,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
) -> ModelOut:
    return service.put_offer(
        conn,
        name,
        route_type,
        body,
        actor=Actor(operator.email),
        now_us=state.now_us(),
        currencies=state.ledger.currencies,
    )


@admin_router.get("/models/{name:path}")
def get_model(name: ModelName, conn: ReadConn, state: State) -> ModelOut:
    return service.get_model(conn, name, state.ledger.currencies)


@admin_router.patch("/models/{name:path}")
def update_model(
    name: ModelName, body: ModelUpdate, operator: CurrentOperator, conn: WriteConn, state: State
) -> ModelOut:
    return service.update_model(
        conn,
        name,
        body,
        actor=Actor(operator.email),
        now_us=state.now_us(),
        currencies=state.ledger.currencies,
    )


@admin_router.post("/catalog/sync/preview")
def sync_preview(document: PreviewDocument, conn: ReadConn, state: State) -> SyncDiff:
    return sync.preview(conn, document, state.ledger.currencies)


@admin_router.post("/catalog/sync/apply")
def sync_apply(
    approved: ApprovedDocument, operator: CurrentOperator, conn: WriteConn, state: State
) -> SyncResult:
    return sync.apply(
        conn,
        approved.document,
        approved.diff_id,
        operator=operator.email,
        now_us=state.now_us(),
        currencies=state.ledger.currencies,
    )
