"""Redeem codes and campaigns: claims and history for users (``/api/credits``), campaigns,
codes and their reports for operators (``/admin/api/credits``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse

from tallygate.credits import claims, service
from tallygate.credits.dependencies import ClaimAttempt
from tallygate.credits.schemas import (
    CampaignCreate,
    CampaignList,
    CampaignOut,
    CodeList,
    CodeOut,
    CodesGenerate,
    CodesGenerated,
    LotUsePage,
    Redeemed,
    RedeemRequest,
    RedemptionPage,
    StatusChange,
)
from tallygate.state import ReadConn, State, WriteConn
from tallygate.users.dependencies import CurrentOperator, CurrentUser

router = APIRouter(prefix="/api/credits", tags=["credits"])
admin_router = APIRouter(prefix="/credits", tags=["admin"])

CampaignId = Annotated[int, Path(ge=1)]
CodeId = Annotated[int, Path(ge=1)]
Cursor = Annotated[int | None, Query(ge=1, description="next_cursor of the previous page")]
Limit = Annotated[int, Query(ge=1, le=200)]


def _csv(chunks: object, name: str) -> StreamingResponse:
    return StreamingResponse(
        chunks,  # type: ignore[arg-type]
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


# ---- users --------------------------------------------------------------------------------------


@router.post("/redeem", status_code=201)
def redeem(body: RedeemRequest, attempt: ClaimAttempt, conn: WriteConn, state: State) -> Redeemed:
    """Claim a code: the credited bucket, the routes it pays, the amount, the new balance, the
    ledger entry and the expiry — or a distinct error per reason (unknown_code,
    already_claimed, code_exhausted, code_disabled, code_expired, code_not_yet_valid), or 429
    after too many failed claims."""
    return claims.redeem(
        conn,
        state.ledger,
        user_id=attempt.user_id,
        text=body.code,
        secret_key=state.settings.secret_key,
        client_address=attempt.client_address,
        now_us=state.now_us(),
    )


@router.get("/redemptions")
def my_redemptions(
    user: CurrentUser, conn: ReadConn, cursor: Cursor = None, limit: Limit = 50
) -> RedemptionPage:
    """The account's own claims and starter grants, newest first."""
    return service.redemption_page(conn, user_id=user.id, cursor=cursor, limit=limit)


# ---- operators: campaigns -----------------------------------------------------------------------


@admin_router.post("/campaigns", status_code=201)
def create_campaign(
    body: CampaignCreate, operator: CurrentOperator, conn: WriteConn, state: State
) -> CampaignOut:
    return service.create_campaign(
        conn,
        body=body,
        currencies=state.ledger.currencies,
        operator=operator.email,
        now_us=state.now_us(),
    )


@admin_router.get("/campaigns")
def list_campaigns(
    conn: ReadConn,
    state: State,
    kind: Annotated[Literal["codes", "starter"] | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> CampaignList:
    return service.list_campaigns(
        conn, kind=kind, now_us=state.now_us(), cursor=cursor, limit=limit
    )


@admin_router.get("/campaigns/{campaign_id}")
def get_campaign(campaign_id: CampaignId, conn: ReadConn, state: State) -> CampaignOut:
    """The campaign and its exact stats: credited, spent (and by how many requests),
    expired, still unspent."""
    return service.get_campaign(conn, campaign_id, now_us=state.now_us())


@admin_router.post("/campaigns/{campaign_id}/disable")
def disable_campaign(
    campaign_id: CampaignId,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
    body: StatusChange | None = None,
) -> CampaignOut:
    return service.set_campaign_status(
        conn,
        campaign_id,
        status="disabled",
        operator=operator.email,
        reason=body.reason if body else "",
        now_us=state.now_us(),
    )


@admin_router.post("/campaigns/{campaign_id}/enable")
def enable_campaign(
    campaign_id: CampaignId,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
    body: StatusChange | None = None,
) -> CampaignOut:
    return service.set_campaign_status(
        conn,
        campaign_id,
        status="active",
        operator=operator.email,
        reason=body.reason if body else "",
        now_us=state.now_us(),
    )


@admin_router.get("/campaigns/{campaign_id}/redemptions")
def campaign_redemptions(
    campaign_id: CampaignId, conn: ReadConn, cursor: Cursor = None, limit: Limit = 50
) -> RedemptionPage:
    return service.redemption_page(conn, campaign_id=campaign_id, cursor=cursor, limit=limit)


@admin_router.get("/campaigns/{campaign_id}/redemptions.csv")
def campaign_redemptions_csv(campaign_id: CampaignId, conn: ReadConn) -> StreamingResponse:
    """Redemption history for reconciliation: code prefix, account, time, ledger entry, lot."""
    return _csv(service.redemptions_csv(conn, campaign_id), f"campaign-{campaign_id}-redemptions")


@admin_router.get("/campaigns/{campaign_id}/usage")
def campaign_usage(
    campaign_id: CampaignId, conn: ReadConn, cursor: Cursor = None, limit: Limit = 50
) -> LotUsePage:
    """The requests that spent this campaign's credit, and how much each took from it."""
    return service.lot_uses(conn, campaign_id, cursor=cursor, limit=limit)


# ---- operators: codes ---------------------------------------------------------------------------


@admin_router.post("/campaigns/{campaign_id}/codes", status_code=201, response_model=None)
def generate_codes(
    campaign_id: CampaignId,
    body: CodesGenerate,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
    format: Annotated[Literal["json", "csv"], Query(description="json, or a CSV download")] = (
        "json"
    ),
) -> CodesGenerated | Response:
    """Generate codes. They are in this response only (JSON, or CSV with ``format=csv``)."""
    generated = service.generate_codes(
        conn,
        campaign_id,
        body=body,
        secret_key=state.settings.secret_key,
        operator=operator.email,
        now_us=state.now_us(),
    )
    if format == "csv":
        return Response(
            b"".join(service.generated_csv(generated)),
            status_code=201,
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f'attachment; filename="campaign-{campaign_id}-codes.csv"'
            },
        )
    return generated


@admin_router.get("/campaigns/{campaign_id}/codes")
def list_codes(
    campaign_id: CampaignId, conn: ReadConn, cursor: Cursor = None, limit: Limit = 100
) -> CodeList:
    return service.list_codes(conn, campaign_id, cursor=cursor, limit=limit)


@admin_router.post("/codes/{code_id}/disable")
def disable_code(
    code_id: CodeId,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
    body: StatusChange | None = None,
) -> CodeOut:
    return service.set_code_status(
        conn,
        code_id,
        status="disabled",
        operator=operator.email,
        reason=body.reason if body else "",
        now_us=state.now_us(),
    )


@admin_router.delete("/codes/{code_id}", status_code=204)
def delete_code(
    code_id: CodeId,
    operator: CurrentOperator,
    conn: WriteConn,
    state: State,
    reason: Annotated[str, Query(max_length=1000)] = "",
) -> None:
    """Delete a never-redeemed code (409 ``code_redeemed`` otherwise)."""
    service.delete_code(
        conn, code_id, operator=operator.email, reason=reason, now_us=state.now_us()
    )
