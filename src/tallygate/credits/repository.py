"""Every SQL statement for campaigns, codes, redemptions and failed claim attempts.

Race-sensitive writes are single statements: the claim counters move by conditional UPDATEs
(cap, status and window checked in the statement that increments), and a claim's row is an
INSERT under ``UNIQUE(grant_key)``. The ledger tables are only read here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    Select,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from tallygate.models.credits import campaigns, redeem_codes, redeem_failures, redemptions
from tallygate.models.ledger import lots
from tallygate.models.users import users

# ---- campaigns ----------------------------------------------------------------------------------


def insert_campaign(conn: Connection, **values: Any) -> int:
    stmt = insert(campaigns).values(**values).returning(campaigns.c.id)
    return int(conn.execute(stmt).scalar_one())


def campaign_by_id(conn: Connection, campaign_id: int) -> RowMapping | None:
    stmt = select(campaigns).where(campaigns.c.id == campaign_id)
    return conn.execute(stmt).mappings().first()


def list_campaigns(
    conn: Connection, *, kind: str | None, after_id: int | None, limit: int
) -> list[RowMapping]:
    """Newest first, keyset-paginated on id."""
    stmt = select(campaigns).order_by(campaigns.c.id.desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(campaigns.c.kind == kind)
    if after_id is not None:
        stmt = stmt.where(campaigns.c.id < after_id)
    return list(conn.execute(stmt).mappings())


def set_campaign_status(conn: Connection, campaign_id: int, status: str, now_us: int) -> bool:
    """Change the status once; False when it already had it."""
    stmt = (
        update(campaigns)
        .where(campaigns.c.id == campaign_id, campaigns.c.status != status)
        .values(status=status, disabled_at=now_us if status == "disabled" else None)
    )
    return conn.execute(stmt).rowcount == 1


def starter_campaigns(conn: Connection, now_us: int) -> list[RowMapping]:
    """Active starter campaigns open at ``now_us``, newest first."""
    stmt = (
        select(campaigns)
        .where(
            campaigns.c.kind == "starter",
            campaigns.c.status == "active",
            campaigns.c.valid_from.is_(None) | (campaigns.c.valid_from <= now_us),
            campaigns.c.valid_until.is_(None) | (campaigns.c.valid_until > now_us),
        )
        .order_by(campaigns.c.id.desc())
    )
    return list(conn.execute(stmt).mappings())


def take_campaign_slot(conn: Connection, campaign_id: int, now_us: int) -> bool:
    """Count one claim, only while the campaign is active, open and under its cap.

    Closes the cap race: the increment and its checks are one statement, and on PostgreSQL
    the row lock it takes makes concurrent claims of the campaign queue here and re-check
    the condition on the committed count; SQLite writers are serialised already. The lock
    also serialises a campaign's claims, so counts read after it are exact."""
    c = campaigns.c
    stmt = (
        update(campaigns)
        .where(
            c.id == campaign_id,
            c.status == "active",
            c.total_cap.is_(None) | (c.redeemed_count < c.total_cap),
            c.valid_from.is_(None) | (c.valid_from <= now_us),
            c.valid_until.is_(None) | (c.valid_until > now_us),
        )
        .values(redeemed_count=c.redeemed_count + 1)
    )
    return conn.execute(stmt).rowcount == 1


# ---- codes ---------------------------------------------------------------------------------------


def insert_code(conn: Connection, **values: Any) -> int:
    stmt = insert(redeem_codes).values(**values).returning(redeem_codes.c.id)
    return int(conn.execute(stmt).scalar_one())


def code_by_digest(conn: Connection, digest: str) -> RowMapping | None:
    stmt = select(redeem_codes).where(redeem_codes.c.digest == digest)
    return conn.execute(stmt).mappings().first()


def code_by_id(conn: Connection, code_id: int) -> RowMapping | None:
    stmt = select(redeem_codes).where(redeem_codes.c.id == code_id)
    return conn.execute(stmt).mappings().first()


def list_codes(
    conn: Connection, *, campaign_id: int, after_id: int | None, limit: int
) -> list[RowMapping]:
    stmt = (
        select(redeem_codes)
        .where(redeem_codes.c.campaign_id == campaign_id)
        .order_by(redeem_codes.c.id)
        .limit(limit)
    )
    if after_id is not None:
        stmt = stmt.where(redeem_codes.c.id > after_id)
    return list(conn.execute(stmt).mappings())


def set_code_status(conn: Connection, code_id: int, status: str, now_us: int) -> bool:
    stmt = (
        update(redeem_codes)
        .where(redeem_codes.c.id == code_id, redeem_codes.c.status != status)
        .values(status=status, disabled_at=now_us if status == "disabled" else None)
    )
    return conn.execute(stmt).rowcount == 1


def take_code_slot(conn: Connection, code_id: int) -> bool:
    """Count one claim of the code, only while it is active and under its own limit (the
    single-use race: of concurrent claims, exactly one matches ``redeemed_count < 1``)."""
    c = redeem_codes.c
    stmt = (
        update(redeem_codes)
        .where(
            c.id == code_id,
            c.status == "active",
            c.max_redemptions.is_(None) | (c.redeemed_count < c.max_redemptions),
        )
        .values(redeemed_count=c.redeemed_count + 1)
    )
    return conn.execute(stmt).rowcount == 1


def delete_unredeemed_code(conn: Connection, code_id: int) -> bool:
    """Delete the code only if nobody ever claimed it. A concurrent claim either counted
    first (then this matches nothing) or finds the code gone (then it is refused as unknown)."""
    stmt = delete(redeem_codes).where(
        redeem_codes.c.id == code_id,
        redeem_codes.c.redeemed_count == 0,
        ~select(redemptions.c.id).where(redemptions.c.code_id == code_id).exists(),
    )
    return conn.execute(stmt).rowcount == 1


# ---- redemptions ---------------------------------------------------------------------------------


def claims_by(conn: Connection, campaign_id: int, user_id: int) -> int:
    stmt = select(func.count()).where(
        redemptions.c.campaign_id == campaign_id, redemptions.c.user_id == user_id
    )
    return int(conn.execute(stmt).scalar_one())


def claims_from_address(conn: Connection, campaign_id: int, address: str) -> int:
    stmt = select(func.count()).where(
        redemptions.c.campaign_id == campaign_id, redemptions.c.client_address == address
    )
    return int(conn.execute(stmt).scalar_one())


def grant_exists(conn: Connection, grant_key: str) -> bool:
    stmt = select(redemptions.c.id).where(redemptions.c.grant_key == grant_key)
    return conn.execute(stmt).first() is not None


_INSERT_REDEMPTION = text(
    "INSERT INTO redemptions (campaign_id, code_id, code_prefix, user_id, grant_key, bucket, "
    "amount_nanos, currency, lot_expires_at, client_address, created_at) "
    "VALUES (:campaign_id, :code_id, :code_prefix, :user_id, :grant_key, :bucket, "
    ":amount_nanos, :currency, :lot_expires_at, :client_address, :created_at) "
    "ON CONFLICT (grant_key) DO NOTHING RETURNING id"
)


def insert_redemption(conn: Connection, **values: Any) -> int | None:
    """The claim's row, or None when its grant key exists (the account's same claim won a
    race: UNIQUE(grant_key) makes the loser wait for the winner's commit, then see it)."""
    found = conn.execute(_INSERT_REDEMPTION, values).scalar()
    return None if found is None else int(found)


def set_redemption_entry(
    conn: Connection, redemption_id: int, *, entry_id: int, lot_id: int | None
) -> None:
    conn.execute(
        update(redemptions)
        .where(redemptions.c.id == redemption_id)
        .values(entry_id=entry_id, lot_id=lot_id)
    )


_REDEMPTION_COLUMNS = (
    redemptions,
    campaigns.c.name.label("campaign_name"),
    users.c.email,
    func.coalesce(lots.c.remaining_nanos, 0).label("remaining_nanos"),
)


def redemptions_select() -> Select[Any]:
    """Redemptions joined to their campaign name, account email and lot (remainder): the one
    query behind the redemption history, the campaign CSV and the redemption export."""
    return (
        select(*_REDEMPTION_COLUMNS)
        .join(campaigns, campaigns.c.id == redemptions.c.campaign_id)
        .join(users, users.c.id == redemptions.c.user_id)
        .outerjoin(lots, lots.c.id == redemptions.c.lot_id)
    )


def redemption_page(
    conn: Connection,
    *,
    user_id: int | None = None,
    campaign_id: int | None = None,
    redemption_id: int | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[RowMapping]:
    """Redemptions with their campaign name, account email and lot remainder, newest first."""
    stmt = redemptions_select().order_by(redemptions.c.id.desc())
    if user_id is not None:
        stmt = stmt.where(redemptions.c.user_id == user_id)
    if campaign_id is not None:
        stmt = stmt.where(redemptions.c.campaign_id == campaign_id)
    if redemption_id is not None:
        stmt = stmt.where(redemptions.c.id == redemption_id)
    if after_id is not None:
        stmt = stmt.where(redemptions.c.id < after_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


# ---- what the campaign's lots became --------------------------------------------------------------

_LOT_TOTALS = text(
    "SELECT COUNT(*), COALESCE(SUM(r.amount_nanos), 0), COALESCE(SUM(l.original_nanos), 0), "
    "COALESCE(SUM(l.remaining_nanos), 0), COALESCE(SUM(l.earmarked_nanos), 0) "
    "FROM redemptions r LEFT JOIN lots l ON l.id = r.lot_id "
    "WHERE r.campaign_id = :campaign_id AND r.entry_id IS NOT NULL"
)

# Draws are the negative postings on a lot (its one positive posting opened it).
_LOT_DRAWS = text(
    "SELECT "
    "COALESCE(SUM(CASE WHEN e.kind = 'usage' THEN -p.amount_nanos ELSE 0 END), 0), "
    "COUNT(DISTINCT CASE WHEN e.kind = 'usage' THEN e.id END), "
    "COALESCE(SUM(CASE WHEN e.kind = 'expiry' THEN -p.amount_nanos ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN e.kind NOT IN ('usage', 'expiry') THEN -p.amount_nanos ELSE 0 END), 0) "
    "FROM redemptions r JOIN postings p ON p.lot_id = r.lot_id "
    "JOIN entries e ON e.id = p.entry_id "
    "WHERE r.campaign_id = :campaign_id AND p.amount_nanos < 0"
)


def lot_totals(conn: Connection, campaign_id: int) -> dict[str, int]:
    """Claims, credited, lot originals, remainders and earmarks over the campaign's lots."""
    row = conn.execute(_LOT_TOTALS, {"campaign_id": campaign_id}).one()
    names = ("redemptions", "credited", "original", "remaining", "earmarked")
    return {name: int(value) for name, value in zip(names, row, strict=True)}


def lot_draws(conn: Connection, campaign_id: int) -> dict[str, int]:
    """What left the campaign's lots, by the kind of entry that took it."""
    row = conn.execute(_LOT_DRAWS, {"campaign_id": campaign_id}).one()
    names = ("spent", "spent_requests", "expired", "other")
    return {name: int(value) for name, value in zip(names, row, strict=True)}


_LOT_USES = text(
    "SELECT e.id AS entry_id, e.cause_id, e.created_at, a.user_id, "
    "-SUM(p.amount_nanos) AS spent_nanos, MAX(rc.model) AS model "
    "FROM redemptions r JOIN postings p ON p.lot_id = r.lot_id "
    "JOIN entries e ON e.id = p.entry_id JOIN accounts a ON a.id = p.account_id "
    "LEFT JOIN receipts rc ON rc.entry_id = e.id "
    "WHERE r.campaign_id = :campaign_id AND p.amount_nanos < 0 AND e.kind = 'usage' "
    "AND e.id > :after_id "
    "GROUP BY e.id, e.cause_id, e.created_at, a.user_id ORDER BY e.id LIMIT :limit"
)


def lot_uses(conn: Connection, campaign_id: int, *, after_id: int, limit: int) -> list[RowMapping]:
    """Usage entries (requests) that drew on the campaign's lots, oldest first."""
    params = {"campaign_id": campaign_id, "after_id": after_id, "limit": limit}
    return list(conn.execute(_LOT_USES, params).mappings())


# ---- failed attempts -----------------------------------------------------------------------------


def failures_by_user(conn: Connection, user_id: int, since_us: int) -> list[int]:
    stmt = (
        select(redeem_failures.c.created_at)
        .where(redeem_failures.c.user_id == user_id, redeem_failures.c.created_at > since_us)
        .order_by(redeem_failures.c.created_at)
    )
    return [int(t) for t in conn.execute(stmt).scalars()]


def failures_by_address(conn: Connection, address: str, since_us: int) -> list[int]:
    stmt = (
        select(redeem_failures.c.created_at)
        .where(redeem_failures.c.client_address == address, redeem_failures.c.created_at > since_us)
        .order_by(redeem_failures.c.created_at)
    )
    return [int(t) for t in conn.execute(stmt).scalars()]


def record_failure(
    conn: Connection, *, user_id: int, address: str, reason: str, now_us: int, prune_before: int
) -> None:
    conn.execute(
        insert(redeem_failures).values(
            user_id=user_id, client_address=address, reason=reason, created_at=now_us
        )
    )
    # Rows outside every window count for nothing: keep the table small.
    conn.execute(
        delete(redeem_failures).where(
            redeem_failures.c.created_at <= prune_before,
            (redeem_failures.c.user_id == user_id) | (redeem_failures.c.client_address == address),
        )
    )
