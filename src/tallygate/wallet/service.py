"""The user's view of the ledger: balances of both buckets and the account history."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection

from tallygate.errors import BadRequest
from tallygate.kit.clock import from_epoch_us, to_epoch_us
from tallygate.kit.money import to_decimal_string
from tallygate.ledger import BUCKETS, Ledger
from tallygate.users import service as users
from tallygate.wallet import repository as repo
from tallygate.wallet.schemas import (
    BucketBalance,
    ExpiringCredit,
    LedgerLine,
    LedgerPage,
    Wallet,
)

LABELS = {"credit": "Credit", "routed": "Routed balance"}


def _decimal(nanos: int | None) -> str | None:
    return None if nanos is None else to_decimal_string(nanos)


def get_wallet(conn: Connection, ledger: Ledger, user_id: int) -> Wallet:
    users.get_user(conn, user_id)  # 404 for an unknown user
    tx = ledger.tx(conn)
    buckets = []
    for bucket in BUCKETS:
        b = ledger.balance(tx, user_id, bucket)
        buckets.append(
            BucketBalance(
                bucket=bucket,  # type: ignore[arg-type]
                label=LABELS[bucket],
                currency=b.currency,
                balance_nanos=b.balance_nanos,
                balance=to_decimal_string(b.balance_nanos),
                held_nanos=b.held_nanos,
                held=to_decimal_string(b.held_nanos),
                available_nanos=b.available_nanos,
                available=to_decimal_string(b.available_nanos),
                debt_nanos=b.debt_nanos,
                debt=to_decimal_string(b.debt_nanos),
            )
        )
    return Wallet(user_id=user_id, buckets=buckets)


def _epoch_us(when: dt.datetime | None) -> int | None:
    if when is None:
        return None
    # A time without an offset is read as UTC, the only zone the ledger speaks.
    return to_epoch_us(when if when.tzinfo else when.replace(tzinfo=dt.UTC))


def _iso(us: int) -> dt.datetime:
    return from_epoch_us(us)


def history(
    conn: Connection,
    *,
    user_id: int,
    bucket: str,
    kind: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    cursor: int | None = None,
    limit: int = 50,
) -> LedgerPage:
    """Entries on the user's bucket account, newest first, in the half-open range
    [since, until), ``limit`` per page; ``next_cursor`` continues after the last row."""
    account = repo.bucket_account(conn, user_id, bucket)
    if account is None:
        users.get_user(conn, user_id)
        raise BadRequest(f"user {user_id} has no {bucket} account", param="bucket")
    account_id, currency = int(account["id"]), str(account["currency"])
    normal = int(account["normal"])
    rows = repo.history(
        conn,
        account_id=account_id,
        before_entry_id=cursor,
        kind=kind or None,
        since_us=_epoch_us(since),
        until_us=_epoch_us(until),
        limit=limit + 1,
    )
    items = []
    for row in rows[:limit]:
        m = row
        amount = normal * int(m["amount_nanos"])
        after = None if m["balance_after_nanos"] is None else int(m["balance_after_nanos"])
        items.append(
            LedgerLine(
                entry_id=int(m["id"]),
                time=_iso(int(m["created_at"])),
                kind=str(m["kind"]),
                currency=currency,
                amount_nanos=amount,
                amount=to_decimal_string(amount),
                balance_after_nanos=after,
                balance_after=_decimal(after),
                cause_type=m["cause_type"],
                cause_id=m["cause_id"],
                memo=str(m["memo"]),
            )
        )
    more = len(rows) > limit
    return LedgerPage(
        bucket=bucket,  # type: ignore[arg-type]
        currency=currency,
        items=items,
        next_cursor=str(items[-1].entry_id) if more else None,
    )


def expiring_credit(conn: Connection, user_id: int, now_us: int) -> dict[str, list[ExpiringCredit]]:
    """Per bucket: the credit that expires (amount left and date), soonest first."""
    found: dict[str, list[ExpiringCredit]] = {b: [] for b in BUCKETS}
    for bucket in BUCKETS:
        account = repo.bucket_account(conn, user_id, bucket)
        if account is None:
            continue
        for row in repo.expiring_lots(conn, int(account["id"]), now_us):
            found[bucket].append(
                ExpiringCredit(
                    bucket=bucket,  # type: ignore[arg-type]
                    currency=str(account["currency"]),
                    lot_id=int(row["id"]),
                    kind=str(row["kind"]),
                    original_nanos=int(row["original_nanos"]),
                    remaining_nanos=int(row["remaining_nanos"]),
                    remaining=to_decimal_string(int(row["remaining_nanos"])),
                    expires_at=_iso(int(row["expires_at"])),
                    source=str(row["memo"]),
                    entry_id=int(row["entry_id"]),
                )
            )
    return found
