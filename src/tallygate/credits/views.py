"""Rows to response bodies (no SQL, no rules)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tallygate.credits.schemas import (
    ROUTES,
    CampaignOut,
    CampaignStats,
    CodeOut,
    RedemptionOut,
)
from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import to_decimal_string


def time_or_none(us: Any) -> dt.datetime | None:
    return None if us is None else from_epoch_us(int(us))


def iso_or_none(us: Any) -> str | None:
    when = time_or_none(us)
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def campaign_state(m: Mapping[Any, Any], now_us: int) -> str:
    if m["status"] != "active":
        return "disabled"
    if m["valid_from"] is not None and now_us < int(m["valid_from"]):
        return "scheduled"
    if m["valid_until"] is not None and now_us >= int(m["valid_until"]):
        return "ended"
    if m["total_cap"] is not None and int(m["redeemed_count"]) >= int(m["total_cap"]):
        return "exhausted"
    return "active"


def campaign_view(
    m: Mapping[Any, Any], now_us: int, stats: CampaignStats | None = None
) -> CampaignOut:
    amount = int(m["amount_nanos"])
    return CampaignOut(
        id=int(m["id"]),
        name=str(m["name"]),
        description=str(m["description"]),
        kind=m["kind"],
        bucket=m["bucket"],
        routes=ROUTES[str(m["bucket"])],
        currency=str(m["currency"]),
        amount_nanos=amount,
        amount=to_decimal_string(amount),
        valid_from=time_or_none(m["valid_from"]),
        valid_until=time_or_none(m["valid_until"]),
        credit_expires_at=time_or_none(m["credit_expires_at"]),
        credit_ttl_seconds=m["credit_ttl_seconds"],
        total_cap=m["total_cap"],
        per_account_limit=int(m["per_account_limit"]),
        per_address_limit=m["per_address_limit"],
        lot_priority=int(m["lot_priority"]),
        redeemed_count=int(m["redeemed_count"]),
        status=m["status"],
        state=campaign_state(m, now_us),  # type: ignore[arg-type]
        created_by=str(m["created_by"]),
        created_at=from_epoch_us(int(m["created_at"])),
        disabled_at=time_or_none(m["disabled_at"]),
        stats=stats,
    )


def stats_view(totals: Mapping[str, int], draws: Mapping[str, int]) -> CampaignStats:
    values = {
        "credited": totals["credited"],
        "debt_repaid": totals["credited"] - totals["original"],
        "spent": draws["spent"],
        "expired": draws["expired"],
        "other_debits": draws["other"],
        "unspent": totals["remaining"],
        "held": totals["earmarked"],
    }
    money: dict[str, Any] = {}
    for name, nanos in values.items():
        money[f"{name}_nanos"] = nanos
        money[name] = to_decimal_string(nanos)
    return CampaignStats(
        redemptions=totals["redemptions"], spent_requests=draws["spent_requests"], **money
    )


def code_view(m: Mapping[Any, Any]) -> CodeOut:
    return CodeOut(
        id=int(m["id"]),
        campaign_id=int(m["campaign_id"]),
        prefix=str(m["prefix"]),
        shared=bool(m["shared"]),
        max_redemptions=m["max_redemptions"],
        redeemed_count=int(m["redeemed_count"]),
        status=m["status"],
        deletable=int(m["redeemed_count"]) == 0,
        created_at=from_epoch_us(int(m["created_at"])),
        disabled_at=time_or_none(m["disabled_at"]),
    )


def redemption_view(m: Mapping[Any, Any]) -> RedemptionOut:
    amount, remaining = int(m["amount_nanos"]), int(m["remaining_nanos"])
    return RedemptionOut(
        id=int(m["id"]),
        campaign_id=int(m["campaign_id"]),
        campaign=str(m["campaign_name"]),
        kind="code" if m["code_id"] is not None else "starter",
        code_prefix=str(m["code_prefix"]),
        user_id=int(m["user_id"]),
        email=str(m["email"]),
        bucket=m["bucket"],
        routes=ROUTES[str(m["bucket"])],
        currency=str(m["currency"]),
        amount_nanos=amount,
        amount=to_decimal_string(amount),
        entry_id=m["entry_id"],
        lot_id=m["lot_id"],
        expires_at=time_or_none(m["lot_expires_at"]),
        remaining_nanos=remaining,
        remaining=to_decimal_string(remaining),
        created_at=from_epoch_us(int(m["created_at"])),
    )
