"""Accounts: user buckets, their debt accounts, and platform accounts.

Codes: ``user:42:credit``, ``user:42:credit:debt``, ``revenue:usage:credit``. A bucket account is
credit-normal and never negative; a debt account is debit-normal (what the user owes); platform
accounts keep no cached balance (their balance is Σ postings), so no hot row serialises users."""

from __future__ import annotations

from dataclasses import dataclass

from tallygate.ledger.errors import UnknownAccount
from tallygate.ledger.tx import Tx

BUCKETS = ("credit", "routed")

# Platform accounts (name, normal side). Each exists once per bucket, in that bucket's currency.
PLATFORM_ACCOUNTS: dict[str, int] = {
    "clearing:sandbox": -1,
    "clearing:stripe": -1,
    "clearing:wechat": -1,
    "clearing:bank": -1,
    "promo:starter": -1,
    "promo:redeem": -1,
    "adjust:admin": -1,
    "revenue:usage": 1,
    "expired:lots": 1,
    "loss:overrun": -1,
    "loss:chargeback": -1,
}


@dataclass(frozen=True, slots=True)
class UserAccounts:
    """The two ledger accounts behind one user's bucket."""

    user_id: int
    bucket: str
    bucket_id: int
    debt_id: int
    currency: str


def user_code(user_id: int, bucket: str) -> str:
    return f"user:{user_id}:{bucket}"


def check_bucket(bucket: str) -> None:
    if bucket not in BUCKETS:
        raise UnknownAccount(f"unknown bucket {bucket!r}: expected one of {', '.join(BUCKETS)}")


def ensure_platform_accounts(tx: Tx, currencies: dict[str, str], now_us: int) -> None:
    """Create every platform account that does not exist yet (idempotent)."""
    for bucket in BUCKETS:
        for name, normal in PLATFORM_ACCOUNTS.items():
            tx.run(
                "INSERT INTO accounts (code, kind, user_id, bucket, currency, normal, "
                "balance_nanos, held_nanos, created_at) VALUES (?, 'platform', NULL, ?, ?, ?, 0, 0, ?) "
                "ON CONFLICT (code) DO NOTHING",
                (f"{name}:{bucket}", bucket, currencies[bucket], normal, now_us),
            )


def ensure_user_accounts(tx: Tx, user_id: int, currencies: dict[str, str], now_us: int) -> None:
    """Open the bucket and debt accounts of a user for both buckets (idempotent)."""
    for bucket in BUCKETS:
        for kind, code, normal in (
            ("bucket", user_code(user_id, bucket), 1),
            ("debt", user_code(user_id, bucket) + ":debt", -1),
        ):
            tx.run(
                "INSERT INTO accounts (code, kind, user_id, bucket, currency, normal, "
                "balance_nanos, held_nanos, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?) "
                "ON CONFLICT (code) DO NOTHING",
                (code, kind, user_id, bucket, currencies[bucket], normal, now_us),
            )


def load_user_accounts(tx: Tx, user_id: int, bucket: str) -> UserAccounts:
    check_bucket(bucket)
    rows = tx.all(
        "SELECT id, kind, currency FROM accounts WHERE user_id = ? AND bucket = ?",
        (user_id, bucket),
    )
    by_kind = {kind: (account_id, currency) for account_id, kind, currency in rows}
    if "bucket" not in by_kind or "debt" not in by_kind:
        raise UnknownAccount(f"user {user_id} has no {bucket} account")
    return UserAccounts(
        user_id, bucket, by_kind["bucket"][0], by_kind["debt"][0], by_kind["bucket"][1]
    )


def load_platform_account(tx: Tx, name: str, bucket: str) -> tuple[int, str]:
    check_bucket(bucket)
    row = tx.one(
        "SELECT id, currency FROM accounts WHERE code = ? AND kind = 'platform'",
        (f"{name}:{bucket}",),
    )
    if row is None:
        raise UnknownAccount(f"unknown platform account {name!r}")
    return int(row[0]), str(row[1])


def bucket_currencies_in_use(tx: Tx) -> dict[str, set[str]]:
    """Currencies that already carry postings, per bucket (a bucket's currency is then fixed)."""
    rows = tx.all(
        "SELECT DISTINCT a.bucket, a.currency FROM accounts a "
        "WHERE EXISTS (SELECT 1 FROM postings p WHERE p.account_id = a.id)"
    )
    used: dict[str, set[str]] = {}
    for bucket, currency in rows:
        used.setdefault(str(bucket), set()).add(str(currency))
    return used
