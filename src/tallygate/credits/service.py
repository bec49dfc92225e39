"""Campaigns and redeem codes for operators: create, generate codes (shown once), disable,
delete never-redeemed codes, and the views of what each campaign's credit became.

Functions take the request's connection first and never commit. Every operator action
(create, generate, enable, disable, delete) writes an audit event in the same transaction.
Claims live in ``claims``; the failed-attempt limit in ``throttle``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Connection

from tallygate.audit import service as audit
from tallygate.credits import codes
from tallygate.credits import repository as repo
from tallygate.credits.schemas import (
    CampaignCreate,
    CampaignList,
    CampaignOut,
    CodeList,
    CodeOut,
    CodesGenerate,
    CodesGenerated,
    GeneratedCode,
    LotUse,
    LotUsePage,
    RedemptionPage,
)
from tallygate.credits.views import (
    campaign_view,
    code_view,
    iso_or_none,
    redemption_view,
    stats_view,
)
from tallygate.errors import BadRequest, Conflict, NotFound
from tallygate.exports.formats import Col, csv_lines
from tallygate.kit.clock import from_epoch_us, to_epoch_us
from tallygate.kit.money import parse_amount, to_decimal_string
from tallygate.ledger.tx import from_connection


class InvalidCampaign(BadRequest):
    code = "invalid_campaign"


class CampaignNotFound(NotFound):
    code = "campaign_not_found"


class CodeNotFound(NotFound):
    code = "code_not_found"


class CodeRedeemed(Conflict):
    """Redeemed codes stay forever: they are part of the wallet's history."""

    code = "code_redeemed"


# ---- campaigns -------------------------------------------------------------------------------


def _us(when: dt.datetime | None) -> int | None:
    if when is None:
        return None
    return to_epoch_us(when if when.tzinfo else when.replace(tzinfo=dt.UTC))


def _campaign_values(body: CampaignCreate, currencies: Mapping[str, str]) -> dict[str, Any]:
    """Validated column values; nothing is written when any field is wrong."""
    name = body.name.strip()
    if not name:
        raise InvalidCampaign("name must not be empty", param="name")
    amount = parse_amount(body.amount.strip(), field="amount")
    if amount <= 0:
        raise InvalidCampaign("amount must be positive", param="amount")
    starts, ends = _us(body.valid_from), _us(body.valid_until)
    if starts is not None and ends is not None and ends <= starts:
        raise InvalidCampaign("valid_until must be after valid_from", param="valid_until")
    if body.kind == "starter" and body.per_account_limit != 1:
        raise InvalidCampaign(
            "a starter credit is granted once per account: per_account_limit must be 1",
            param="per_account_limit",
        )
    if body.kind == "codes" and body.per_address_limit is not None:
        raise InvalidCampaign(
            "per_address_limit applies to starter campaigns; code claims are limited by the "
            "failed-attempt limit and each code's own limits",
            param="per_address_limit",
        )
    return {
        "name": name,
        "description": body.description.strip(),
        "kind": body.kind,
        "bucket": body.bucket,
        "amount_nanos": amount,
        "currency": currencies[body.bucket],
        "valid_from": starts,
        "valid_until": ends,
        "credit_expires_at": _us(body.credit_expires_at),
        "credit_ttl_seconds": body.credit_ttl_seconds,
        "lot_priority": body.lot_priority,
        "total_cap": body.total_cap,
        "per_account_limit": body.per_account_limit,
        "per_address_limit": body.per_address_limit,
    }


def _audit_values(values: Mapping[Any, Any]) -> dict[str, Any]:
    shown = dict(values)
    for name in ("valid_from", "valid_until", "credit_expires_at"):
        shown[name] = iso_or_none(values.get(name))
    shown["amount"] = to_decimal_string(int(values["amount_nanos"]))
    return shown


def create_campaign(
    conn: Connection,
    *,
    body: CampaignCreate,
    currencies: Mapping[str, str],
    operator: str,
    now_us: int,
) -> CampaignOut:
    values = _campaign_values(body, currencies)
    campaign_id = repo.insert_campaign(conn, **values, created_by=operator, created_at=now_us)
    audit.record(
        from_connection(conn),
        now_us=now_us,
        actor=operator,
        source="operator",
        action="campaign.create",
        target=f"campaign:{campaign_id}",
        after=_audit_values(values),
    )
    return get_campaign(conn, campaign_id, now_us=now_us)


def _campaign_row(conn: Connection, campaign_id: int) -> Mapping[Any, Any]:
    row = repo.campaign_by_id(conn, campaign_id)
    if row is None:
        raise CampaignNotFound(f"no campaign with id {campaign_id}")
    return row


def get_campaign(conn: Connection, campaign_id: int, *, now_us: int) -> CampaignOut:
    """The campaign with its exact stats (what its lots became)."""
    row = _campaign_row(conn, campaign_id)
    stats = stats_view(repo.lot_totals(conn, campaign_id), repo.lot_draws(conn, campaign_id))
    return campaign_view(row, now_us, stats)


def list_campaigns(
    conn: Connection, *, kind: str | None, now_us: int, cursor: int | None, limit: int
) -> CampaignList:
    rows = repo.list_campaigns(conn, kind=kind, after_id=cursor, limit=limit + 1)
    items = [campaign_view(r, now_us) for r in rows[:limit]]
    return CampaignList(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


def set_campaign_status(
    conn: Connection,
    campaign_id: int,
    *,
    status: str,
    operator: str,
    reason: str,
    now_us: int,
) -> CampaignOut:
    """Disable (no new claims; history and credited lots stay) or re-enable; idempotent."""
    before = _campaign_row(conn, campaign_id)
    if repo.set_campaign_status(conn, campaign_id, status, now_us):
        audit.record(
            from_connection(conn),
            now_us=now_us,
            actor=operator,
            source="operator",
            action="campaign.disable" if status == "disabled" else "campaign.enable",
            target=f"campaign:{campaign_id}",
            before={"status": before["status"]},
            after={"status": status},
            reason=reason,
        )
    return get_campaign(conn, campaign_id, now_us=now_us)


# ---- codes -------------------------------------------------------------------------------------


def generate_codes(
    conn: Connection,
    campaign_id: int,
    *,
    body: CodesGenerate,
    secret_key: str,
    operator: str,
    now_us: int,
) -> CodesGenerated:
    """New codes for a ``codes`` campaign, returned once: only their HMACs are stored."""
    campaign = _campaign_row(conn, campaign_id)
    if campaign["kind"] != "codes":
        raise InvalidCampaign("starter campaigns have no codes: they grant every new account")
    prefix = body.prefix.strip()
    if prefix and not codes.PREFIX_RE.match(prefix):
        raise InvalidCampaign("prefix must be 1-16 letters or digits", param="prefix")
    if body.shared and body.count != 1:
        raise InvalidCampaign("a shared code is one code: count must be 1", param="count")
    made: list[GeneratedCode] = []
    for _ in range(body.count):
        code, visible = codes.generate(prefix)
        code_id = repo.insert_code(
            conn,
            campaign_id=campaign_id,
            prefix=visible,
            digest=codes.digest(secret_key, code),
            shared=int(body.shared),
            max_redemptions=None if body.shared else 1,
            created_at=now_us,
        )
        made.append(GeneratedCode(id=code_id, code=code, prefix=visible))
    audit.record(
        from_connection(conn),
        now_us=now_us,
        actor=operator,
        source="operator",
        action="code.generate",
        target=f"campaign:{campaign_id}",
        after={
            "count": len(made),
            "shared": body.shared,
            "code_ids": [made[0].id, made[-1].id],
            "prefixes": [c.prefix for c in made[:20]],
        },
    )
    return CodesGenerated(
        campaign_id=campaign_id, campaign=str(campaign["name"]), shared=body.shared, codes=made
    )


GENERATED_COLUMNS = (Col("code"), Col("prefix"), Col("campaign_id", "int"), Col("campaign"))


def generated_csv(generated: CodesGenerated) -> Iterator[bytes]:
    campaign = {"campaign_id": generated.campaign_id, "campaign": generated.campaign}
    rows = [{"code": c.code, "prefix": c.prefix, **campaign} for c in generated.codes]
    return csv_lines(GENERATED_COLUMNS, rows)


def list_codes(conn: Connection, campaign_id: int, *, cursor: int | None, limit: int) -> CodeList:
    _campaign_row(conn, campaign_id)
    rows = repo.list_codes(conn, campaign_id=campaign_id, after_id=cursor, limit=limit + 1)
    items = [code_view(r) for r in rows[:limit]]
    return CodeList(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


def _code_row(conn: Connection, code_id: int) -> Mapping[Any, Any]:
    row = repo.code_by_id(conn, code_id)
    if row is None:
        raise CodeNotFound(f"no redeem code with id {code_id}")
    return row


def set_code_status(
    conn: Connection, code_id: int, *, status: str, operator: str, reason: str, now_us: int
) -> CodeOut:
    before = _code_row(conn, code_id)
    if repo.set_code_status(conn, code_id, status, now_us):
        audit.record(
            from_connection(conn),
            now_us=now_us,
            actor=operator,
            source="operator",
            action="code.disable" if status == "disabled" else "code.enable",
            target=f"code:{code_id}",
            before={"status": before["status"], "prefix": before["prefix"]},
            after={"status": status, "prefix": before["prefix"]},
            reason=reason,
        )
    return code_view(_code_row(conn, code_id))


def delete_code(conn: Connection, code_id: int, *, operator: str, reason: str, now_us: int) -> None:
    """Delete a code nobody ever claimed; a redeemed code is refused (disable it instead)."""
    before = _code_row(conn, code_id)
    if not repo.delete_unredeemed_code(conn, code_id):
        raise CodeRedeemed(
            f"code {before['prefix']} has been redeemed and stays traceable: "
            "disable it instead of deleting it"
        )
    audit.record(
        from_connection(conn),
        now_us=now_us,
        actor=operator,
        source="operator",
        action="code.delete",
        target=f"code:{code_id}",
        before={
            "campaign_id": int(before["campaign_id"]),
            "prefix": before["prefix"],
            "status": before["status"],
        },
        reason=reason,
    )


# ---- redemption history and usage --------------------------------------------------------------


def redemption_page(
    conn: Connection,
    *,
    user_id: int | None = None,
    campaign_id: int | None = None,
    cursor: int | None,
    limit: int,
) -> RedemptionPage:
    """Newest first; ``user_id`` for a user's own history, ``campaign_id`` for operators."""
    if campaign_id is not None:
        _campaign_row(conn, campaign_id)
    rows = repo.redemption_page(
        conn, user_id=user_id, campaign_id=campaign_id, after_id=cursor, limit=limit + 1
    )
    items = [redemption_view(r) for r in rows[:limit]]
    more = len(rows) > limit
    return RedemptionPage(items=items, next_cursor=str(items[-1].id) if more else None)


REDEMPTION_COLUMNS = (
    Col("redemption_id", "int"),
    Col("created_at", "time"),
    Col("campaign_id", "int"),
    Col("campaign"),
    Col("code_prefix"),
    Col("user_id", "int"),
    Col("email"),
    Col("bucket"),
    Col("currency"),
    Col("amount", "money"),
    Col("entry_id", "int"),
    Col("lot_id", "int"),
    Col("lot_expires_at", "time"),
    Col("remaining", "money"),
    Col("client_address"),
)


def redemptions_csv(conn: Connection, campaign_id: int) -> Iterator[bytes]:
    """The campaign's whole redemption history as CSV (read at once, then streamed)."""
    _campaign_row(conn, campaign_id)
    rows = [
        {
            **dict(r),
            "redemption_id": r["id"],
            "campaign": r["campaign_name"],
            "amount": r["amount_nanos"],
            "remaining": r["remaining_nanos"],
        }
        for r in reversed(repo.redemption_page(conn, campaign_id=campaign_id))
    ]
    return csv_lines(REDEMPTION_COLUMNS, rows)


def lot_uses(conn: Connection, campaign_id: int, *, cursor: int | None, limit: int) -> LotUsePage:
    """The requests that spent the campaign's credit (usage entries drawing on its lots)."""
    _campaign_row(conn, campaign_id)
    rows = repo.lot_uses(conn, campaign_id, after_id=cursor or 0, limit=limit + 1)
    items = [
        LotUse(
            request_id=r["cause_id"],
            entry_id=int(r["entry_id"]),
            user_id=int(r["user_id"]),
            spent_nanos=int(r["spent_nanos"]),
            spent=to_decimal_string(int(r["spent_nanos"])),
            model=str(r["model"] or ""),
            at=from_epoch_us(int(r["created_at"])),
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return LotUsePage(items=items, next_cursor=str(items[-1].entry_id) if more else None)
