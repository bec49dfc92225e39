"""Claiming credit: a redeem code, or the starter credit of a new account.

A claim is one transaction (DESIGN.md "redeem code"; research/ledger.md §6.2.3):
1. a conditional UPDATE counts it on the campaign (active, inside its window, under its cap);
2. a conditional UPDATE counts it on the code (active, under its own limit);
3. the account's claims of the campaign are counted again — exact, because step 1's row lock
   serialises the campaign's claims — against the per-account limit;
4. the redemption row is inserted under ``UNIQUE(grant_key)``;
5. the ledger credits the bucket under the same key, opening a ``promo`` lot (with the
   campaign's expiry and priority), and the row records the entry and the lot.
Every refusal raises before anything is written or rolls back with the transaction, so a
refused claim leaves no trace but its failed-attempt row (see ``throttle``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from tallygate.credits import codes
from tallygate.credits import repository as repo
from tallygate.credits.schemas import Redeemed, RedemptionOut
from tallygate.credits.views import iso_or_none, redemption_view
from tallygate.errors import Conflict, NotFound, TallygateError
from tallygate.kit.money import to_decimal_string
from tallygate.ledger import Ledger


class ClaimRefused(TallygateError):
    """A claim refused for a reason the claimant can see; counts as a failed attempt."""


class UnknownCode(ClaimRefused, NotFound):
    code = "unknown_code"


class AlreadyClaimed(ClaimRefused, Conflict):
    code = "already_claimed"


class CodeExhausted(ClaimRefused, Conflict):
    code = "code_exhausted"


class CodeDisabled(ClaimRefused, Conflict):
    code = "code_disabled"


class CodeExpired(ClaimRefused, Conflict):
    code = "code_expired"


class CodeNotYetValid(ClaimRefused, Conflict):
    code = "code_not_yet_valid"


def refusal(
    code: Mapping[Any, Any], campaign: Mapping[Any, Any], claims: int, now_us: int
) -> ClaimRefused | None:
    """Why this account cannot claim this code now, or None. One reason, in a fixed order."""
    already = already_claimed(campaign, claims)
    if already is not None:
        return already
    if code["status"] != "active" or campaign["status"] != "active":
        return CodeDisabled("this code has been disabled and can no longer be claimed")
    starts, ends = campaign["valid_from"], campaign["valid_until"]
    if starts is not None and now_us < int(starts):
        return CodeNotYetValid(f"this code can be claimed from {iso_or_none(starts)}")
    if ends is not None and now_us >= int(ends):
        return CodeExpired(f"this code expired at {iso_or_none(ends)}")
    code_max = code["max_redemptions"]
    if code_max is not None and int(code["redeemed_count"]) >= int(code_max):
        return CodeExhausted("this code has already been claimed")
    cap = campaign["total_cap"]
    if cap is not None and int(campaign["redeemed_count"]) >= int(cap):
        return CodeExhausted("this campaign has been fully claimed")
    return None


def already_claimed(campaign: Mapping[Any, Any], claims: int) -> AlreadyClaimed | None:
    limit = int(campaign["per_account_limit"])
    if claims < limit:
        return None
    times = "once" if limit == 1 else f"{limit} times"
    return AlreadyClaimed(
        f"this account has already claimed {campaign['name']!r} (each account may claim it {times})"
    )


def lot_expiry(campaign: Mapping[Any, Any], now_us: int) -> int | None:
    """The earlier of the campaign's fixed credit expiry and claim time + its TTL."""
    found = []
    if campaign["credit_expires_at"] is not None:
        found.append(int(campaign["credit_expires_at"]))
    if campaign["credit_ttl_seconds"] is not None:
        found.append(now_us + int(campaign["credit_ttl_seconds"]) * 1_000_000)
    return min(found) if found else None


def redeem(
    conn: Connection,
    ledger: Ledger,
    *,
    user_id: int,
    text: str,
    secret_key: str,
    client_address: str,
    now_us: int,
) -> Redeemed:
    """Claim the code ``text`` for ``user_id``; raises a ``ClaimRefused`` naming the reason."""
    unknown = UnknownCode("no such redeem code: check it and try again")
    if not codes.normalise(text) or len(text) > codes.MAX_INPUT:
        raise unknown
    code = repo.code_by_digest(conn, codes.digest(secret_key, text))
    if code is None:
        raise unknown
    campaign = repo.campaign_by_id(conn, int(code["campaign_id"]))
    assert campaign is not None
    campaign_id = int(campaign["id"])
    found = refusal(code, campaign, repo.claims_by(conn, campaign_id, user_id), now_us)
    if found is not None:
        raise found
    if not (
        repo.take_campaign_slot(conn, campaign_id, now_us)
        and repo.take_code_slot(conn, int(code["id"]))
    ):
        # Lost a race (cap, single use, disable): say which, from the committed state.
        raise _refusal_now(conn, int(code["id"]), campaign_id, user_id, now_us)
    claims = repo.claims_by(conn, campaign_id, user_id)  # exact: the campaign row is locked
    already = already_claimed(campaign, claims)
    if already is not None:
        raise already
    redemption_id = grant(
        conn,
        ledger,
        campaign,
        user_id=user_id,
        grant_key=f"redeem:{campaign_id}:{user_id}:{claims + 1}",
        code_id=int(code["id"]),
        code_prefix=str(code["prefix"]),
        client_address=client_address,
        now_us=now_us,
    )
    if redemption_id is None:
        raise AlreadyClaimed(f"this account has already claimed {campaign['name']!r}")
    view = redemption(conn, redemption_id)
    balance = ledger.balance(ledger.tx(conn), user_id, view.bucket)
    return Redeemed(
        **view.model_dump(),
        balance_nanos=balance.balance_nanos,
        balance=to_decimal_string(balance.balance_nanos),
        available_nanos=balance.available_nanos,
        available=to_decimal_string(balance.available_nanos),
    )


def _refusal_now(
    conn: Connection, code_id: int, campaign_id: int, user_id: int, now_us: int
) -> ClaimRefused:
    code = repo.code_by_id(conn, code_id)
    campaign = repo.campaign_by_id(conn, campaign_id)
    if code is None or campaign is None:
        return UnknownCode("no such redeem code: check it and try again")
    claims = repo.claims_by(conn, campaign_id, user_id)
    return refusal(code, campaign, claims, now_us) or CodeExhausted(
        "this code has already been claimed"
    )


def grant(
    conn: Connection,
    ledger: Ledger,
    campaign: Mapping[Any, Any],
    *,
    user_id: int,
    grant_key: str,
    code_id: int | None,
    code_prefix: str,
    client_address: str | None,
    now_us: int,
) -> int | None:
    """Insert the redemption and credit the bucket under ``grant_key``; returns the
    redemption id, or None when that key was already granted (nothing is written)."""
    expires = lot_expiry(campaign, now_us)
    bucket = str(campaign["bucket"])
    amount = int(campaign["amount_nanos"])
    redemption_id = repo.insert_redemption(
        conn,
        campaign_id=int(campaign["id"]),
        code_id=code_id,
        code_prefix=code_prefix,
        user_id=user_id,
        grant_key=grant_key,
        bucket=bucket,
        amount_nanos=amount,
        currency=str(campaign["currency"]),
        lot_expires_at=expires,
        client_address=client_address,
        created_at=now_us,
    )
    if redemption_id is None:
        return None
    starter = campaign["kind"] == "starter"
    entry = ledger.credit(
        ledger.tx(conn),
        user_id=user_id,
        bucket=bucket,
        amount_nanos=amount,
        kind="grant" if starter else "redeem",
        source="promo:starter" if starter else "promo:redeem",
        idempotency_key=grant_key,
        lot_kind="promo",
        lot_priority=int(campaign["lot_priority"]),
        lot_expires_at=expires,
        cause_type="redemption",
        cause_id=str(redemption_id),
        memo=f"{campaign['name']} ({code_prefix})" if code_prefix else str(campaign["name"]),
    )
    repo.set_redemption_entry(
        conn, redemption_id, entry_id=entry.entry_id, lot_id=entry.extra.get("lot_id")
    )
    return redemption_id


def grant_starter(
    conn: Connection,
    ledger: Ledger,
    *,
    user_id: int,
    now_us: int,
    client_address: str | None = None,
) -> list[int]:
    """Grant the new account the starter credit of each bucket (the newest active starter
    campaign of that bucket), exactly once per user and bucket: the grant key
    ``starter:<user>:<bucket>`` is unique both as a redemption and as a ledger entry, so a
    repeated call grants nothing. A campaign past its cap, or whose per-address cap this
    client address reached, grants nothing; account creation goes on. Returns the
    redemption ids granted now."""
    granted: list[int] = []
    seen: set[str] = set()
    for campaign in repo.starter_campaigns(conn, now_us):
        bucket = str(campaign["bucket"])
        if bucket in seen:
            continue
        seen.add(bucket)
        key = f"starter:{user_id}:{bucket}"
        if repo.grant_exists(conn, key) or _address_capped(conn, campaign, client_address):
            continue
        if not repo.take_campaign_slot(conn, int(campaign["id"]), now_us):
            continue
        found = grant(
            conn,
            ledger,
            campaign,
            user_id=user_id,
            grant_key=key,
            code_id=None,
            code_prefix="",
            client_address=client_address,
            now_us=now_us,
        )
        if found is None:  # pragma: no cover - the key was checked under the campaign lock
            raise RuntimeError(f"starter grant {key} appeared concurrently")
        granted.append(found)
    return granted


def _address_capped(
    conn: Connection, campaign: Mapping[Any, Any], client_address: str | None
) -> bool:
    cap = campaign["per_address_limit"]
    if cap is None or not client_address:
        return False
    return repo.claims_from_address(conn, int(campaign["id"]), client_address) >= int(cap)


class RedemptionNotFound(NotFound):
    code = "redemption_not_found"


def redemption(conn: Connection, redemption_id: int) -> RedemptionOut:
    rows = repo.redemption_page(conn, redemption_id=redemption_id)
    if not rows:
        raise RedemptionNotFound(f"no redemption with id {redemption_id}")
    return redemption_view(rows[0])
