"""Console pages: campaigns and redeem codes.

Everything goes through ``tallygate.credits.service`` (the admin API's service): campaigns with
their exact stats (credited, spent and by how many requests, expired, unspent), codes generated
and shown once — on the page, or as a CSV download straight from the generating request; the
server keeps only their HMACs — disable, delete when never redeemed, the redemption list."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from tallygate.credits import service as credits
from tallygate.credits.schemas import CampaignCreate, CampaignOut, CodesGenerate, CodesGenerated
from tallygate.errors import TallygateError
from tallygate.ledger import BUCKETS
from tallygate.web.auth import Viewer
from tallygate.web.operator import Operator, OperatorForm
from tallygate.web.params import MAX_ID
from tallygate.web.render import LABELS, page

router = APIRouter(prefix="/operator", include_in_schema=False)

CampaignId = Annotated[int, Path(ge=1, le=MAX_ID)]
CodeId = Annotated[int, Path(ge=1, le=MAX_ID)]
Short = Annotated[str, Form(max_length=200)]
Reason = Annotated[str, Form(max_length=1000)]


def _date(value: str, field: str) -> dt.datetime | None:
    """A ``YYYY-MM-DD`` (midnight UTC) or ``YYYY-MM-DDTHH:MM`` (UTC) form value."""
    value = value.strip()
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    except ValueError:
        raise credits.InvalidCampaign(f"{field} must be a date (YYYY-MM-DD)") from None


def _count(value: str, field: str, *, default: int | None = None) -> int | None:
    value = value.strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise credits.InvalidCampaign(f"{field} must be a whole number") from None
    if number < 1:
        raise credits.InvalidCampaign(f"{field} must be at least 1")
    return number


def _buckets(v: Viewer) -> list[tuple[str, str, str]]:
    return [(b, LABELS[b], v.state.ledger.currencies[b]) for b in BUCKETS]


# ---- list and create ---------------------------------------------------------------------------

NEW_CAMPAIGN = {
    "name": "",
    "description": "",
    "kind": "codes",
    "bucket": "credit",
    "amount": "",
    "valid_from": "",
    "valid_until": "",
    "credit_ttl_days": "",
    "total_cap": "",
    "per_account_limit": "1",
}


def _campaigns_page(
    request: Request,
    v: Viewer,
    *,
    cursor: int | None = None,
    status_code: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    now = v.state.now_us()
    with v.state.db.read() as conn:
        listing = credits.list_campaigns(conn, kind=None, now_us=now, cursor=cursor, limit=50)
        items = [credits.get_campaign(conn, c.id, now_us=now) for c in listing.items]
    return page(
        request,
        v,
        "operator_campaigns.html",
        status_code=status_code,
        title="Campaigns & codes",
        nav="operator",
        subnav="campaigns",
        campaigns=items,
        next_cursor=listing.next_cursor,
        error=error,
        form=form or NEW_CAMPAIGN,
        buckets=_buckets(v),
    )


@router.get("/campaigns")
def campaigns_page(
    request: Request, v: Operator, cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None
) -> Response:
    return _campaigns_page(request, v, cursor=cursor)


@router.post("/campaigns")
def create_campaign(
    request: Request,
    v: OperatorForm,
    name: Short = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    kind: Short = "codes",
    bucket: Short = "",
    amount: Annotated[str, Form(max_length=40)] = "",
    valid_from: Short = "",
    valid_until: Short = "",
    credit_ttl_days: Short = "",
    total_cap: Short = "",
    per_account_limit: Short = "1",
) -> Response:
    assert v.user is not None
    form = {
        "name": name,
        "description": description,
        "kind": kind,
        "bucket": bucket,
        "amount": amount,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "credit_ttl_days": credit_ttl_days,
        "total_cap": total_cap,
        "per_account_limit": per_account_limit,
    }
    try:
        if bucket not in BUCKETS:
            raise credits.InvalidCampaign(f"choose {LABELS['credit']} or {LABELS['routed']}")
        if kind not in ("codes", "starter"):
            raise credits.InvalidCampaign("choose redeem codes or starter credit")
        ttl_days = _count(credit_ttl_days, "credit lasts (days)")
        body = CampaignCreate(
            name=name,
            description=description,
            kind=kind,  # type: ignore[arg-type]
            bucket=bucket,  # type: ignore[arg-type]
            amount=amount,
            valid_from=_date(valid_from, "valid from"),
            valid_until=_date(valid_until, "valid until"),
            credit_ttl_seconds=None if ttl_days is None else ttl_days * 86_400,
            total_cap=_count(total_cap, "total claims"),
            per_account_limit=_count(per_account_limit, "claims per account") or 1,
        )
        with v.state.db.begin() as conn:
            made = credits.create_campaign(
                conn,
                body=body,
                currencies=v.state.ledger.currencies,
                operator=v.user.email,
                now_us=v.state.now_us(),
            )
    except ValidationError:
        return _campaigns_page(
            request, v, status_code=400, form=form, error="check the fields: a value is too large"
        )
    except TallygateError as exc:
        return _campaigns_page(request, v, status_code=exc.status, form=form, error=exc.message)
    return RedirectResponse(f"/operator/campaigns/{made.id}?saved=created", status_code=303)


# ---- one campaign ------------------------------------------------------------------------------

SAVED = {
    "created": "Campaign created.",
    "disabled": "Campaign disabled: no new claims; credit already granted stays.",
    "enabled": "Campaign enabled: claims are accepted again.",
    "code-disabled": "Code disabled: it can no longer be claimed.",
    "code-deleted": "Unused code deleted.",
}


def _campaign_page(
    request: Request,
    v: Viewer,
    campaign_id: int,
    *,
    status_code: int = 200,
    error: str | None = None,
    saved: str | None = None,
    generated: CodesGenerated | None = None,
    codes_cursor: int | None = None,
    redemptions_cursor: int | None = None,
) -> Response:
    now = v.state.now_us()
    with v.state.db.read() as conn:
        campaign: CampaignOut = credits.get_campaign(conn, campaign_id, now_us=now)
        codes = credits.list_codes(conn, campaign_id, cursor=codes_cursor, limit=100)
        redeemed = credits.redemption_page(
            conn, campaign_id=campaign_id, cursor=redemptions_cursor, limit=50
        )
        uses = credits.lot_uses(conn, campaign_id, cursor=None, limit=20)
    return page(
        request,
        v,
        "operator_campaign.html",
        status_code=status_code,
        title=f"Campaign {campaign.name}",
        nav="operator",
        subnav="campaigns",
        campaign=campaign,
        codes=codes,
        redemptions=redeemed,
        uses=uses,
        error=error,
        saved=saved,
        generated=generated,
    )


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    request: Request,
    v: Operator,
    campaign_id: CampaignId,
    saved: str = "",
    codes_cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    redemptions_cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    return _campaign_page(
        request,
        v,
        campaign_id,
        saved=SAVED.get(saved),
        codes_cursor=codes_cursor,
        redemptions_cursor=redemptions_cursor,
    )


def _set_status(
    request: Request, v: Viewer, campaign_id: int, status: str, reason: str
) -> Response:
    assert v.user is not None
    with v.state.db.begin() as conn:
        credits.set_campaign_status(
            conn,
            campaign_id,
            status=status,
            operator=v.user.email,
            reason=reason,
            now_us=v.state.now_us(),
        )
    saved = "disabled" if status == "disabled" else "enabled"
    return RedirectResponse(f"/operator/campaigns/{campaign_id}?saved={saved}", status_code=303)


@router.post("/campaigns/{campaign_id}/disable")
def disable_campaign(
    request: Request, v: OperatorForm, campaign_id: CampaignId, reason: Reason = ""
) -> Response:
    return _set_status(request, v, campaign_id, "disabled", reason)


@router.post("/campaigns/{campaign_id}/enable")
def enable_campaign(
    request: Request, v: OperatorForm, campaign_id: CampaignId, reason: Reason = ""
) -> Response:
    return _set_status(request, v, campaign_id, "active", reason)


@router.post("/campaigns/{campaign_id}/codes")
def generate_codes(
    request: Request,
    v: OperatorForm,
    campaign_id: CampaignId,
    count: Short = "1",
    prefix: Annotated[str, Form(max_length=16)] = "",
    shared: Annotated[str, Form(max_length=8)] = "",
    format: Annotated[str, Form(max_length=8)] = "page",
) -> Response:
    """Generate codes: shown on the page once, or (``format=csv``) downloaded as CSV from this
    very response. Either way they exist nowhere else."""
    assert v.user is not None
    try:
        body = CodesGenerate(
            count=_count(count, "number of codes", default=1) or 1,
            prefix=prefix,
            shared=shared == "on",
        )
        with v.state.db.begin() as conn:
            made = credits.generate_codes(
                conn,
                campaign_id,
                body=body,
                secret_key=v.state.settings.secret_key,
                operator=v.user.email,
                now_us=v.state.now_us(),
            )
    except ValidationError:
        return _campaign_page(
            request,
            v,
            campaign_id,
            status_code=400,
            error="generate between 1 and 10,000 codes at once, with a prefix of 16 letters or "
            "digits at most",
        )
    except TallygateError as exc:
        if isinstance(exc, credits.CampaignNotFound):
            raise
        return _campaign_page(request, v, campaign_id, status_code=exc.status, error=exc.message)
    if format == "csv":
        return _codes_csv(made)
    return _campaign_page(request, v, campaign_id, generated=made)


def _codes_csv(made: CodesGenerated) -> Response:
    return Response(
        b"".join(credits.generated_csv(made)),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": (
                f'attachment; filename="campaign-{made.campaign_id}-codes.csv"'
            ),
            "cache-control": "no-store",
        },
    )


@router.post("/codes/{code_id}/disable")
def disable_code(
    request: Request, v: OperatorForm, code_id: CodeId, reason: Reason = ""
) -> Response:
    assert v.user is not None
    with v.state.db.begin() as conn:
        made = credits.set_code_status(
            conn,
            code_id,
            status="disabled",
            operator=v.user.email,
            reason=reason,
            now_us=v.state.now_us(),
        )
    return RedirectResponse(
        f"/operator/campaigns/{made.campaign_id}?saved=code-disabled#codes", status_code=303
    )


@router.post("/codes/{code_id}/delete")
def delete_code(
    request: Request,
    v: OperatorForm,
    code_id: CodeId,
    campaign_id: Annotated[int, Form(ge=1, le=MAX_ID)],
    reason: Reason = "",
) -> Response:
    """Delete a never-redeemed code; a redeemed one is refused with the reason on the page."""
    assert v.user is not None
    try:
        with v.state.db.begin() as conn:
            credits.delete_code(
                conn, code_id, operator=v.user.email, reason=reason, now_us=v.state.now_us()
            )
    except credits.CodeRedeemed as exc:
        return _campaign_page(request, v, campaign_id, status_code=exc.status, error=exc.message)
    return RedirectResponse(
        f"/operator/campaigns/{campaign_id}?saved=code-deleted#codes", status_code=303
    )
