"""The database itself refuses money rows that break the ledger's rules, on SQLite and on
PostgreSQL alike — also after migration 0015 rewrote PostgreSQL's enumeration checks and hold
functions for speed (decision 0022) — and a settlement's postings keep their order."""

from __future__ import annotations

import sqlite3
import uuid

import psycopg
import pytest

from tallygate.ledger import Ledger
from tallygate.ledger.reconcile import reconcile
from tests.conftest import TxRunner

USD = 1_000_000_000
INTEGRITY = (sqlite3.IntegrityError, psycopg.IntegrityError)
ACCOUNTS = "SELECT id, kind, normal, balance_nanos, held_nanos FROM accounts ORDER BY id"


@pytest.fixture(autouse=True)
def funded(ledger: Ledger, run: TxRunner) -> None:
    run(ledger.open_user, 1)
    run(
        ledger.credit,
        user_id=1,
        bucket="credit",
        amount_nanos=10 * USD,
        kind="topup",
        source="clearing:sandbox",
        idempotency_key=uuid.uuid4().hex,
    )


def bucket_id(run: TxRunner) -> int:
    row = run(
        lambda tx: tx.one(
            "SELECT id FROM accounts WHERE user_id = 1 AND bucket = 'credit' AND kind = 'bucket'"
        )
    )
    return int(row[0])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE accounts SET kind = 'wallet' WHERE id = {account}",
        "UPDATE accounts SET normal = 2 WHERE id = {account}",
        "UPDATE accounts SET held_nanos = balance_nanos + 1 WHERE id = {account}",
        "UPDATE accounts SET balance_nanos = -1, held_nanos = 0 WHERE id = {account}",
        "UPDATE lots SET kind = 'gift' WHERE account_id = {account}",
        "UPDATE lots SET earmarked_nanos = remaining_nanos + 1 WHERE account_id = {account}",
        "UPDATE holds SET status = 'lost' WHERE account_id = {account}",
        "INSERT INTO key_spend (key_id, bucket) VALUES (1, 'gold')",
    ],
    ids=[
        "unknown account kind",
        "unknown normal side",
        "more held than the balance",
        "negative user balance",
        "unknown lot kind",
        "lot earmarked beyond what remains",
        "unknown hold status",
        "unknown key bucket",
    ],
)
def test_the_schema_refuses_a_row_that_breaks_a_ledger_rule(
    run: TxRunner, ledger: Ledger, statement: str
) -> None:
    run(ledger.place_hold, user_id=1, bucket="credit", hold_key="h", amount_nanos=USD)
    account = bucket_id(run)
    before = run(lambda tx: tx.all(ACCOUNTS))

    with pytest.raises(INTEGRITY):
        run(lambda tx: tx.run(statement.format(account=account)))

    assert run(lambda tx: tx.all(ACCOUNTS)) == before
    run(ledger.release_hold, hold_key="h")


def test_a_valid_status_change_passes_the_same_checks(run: TxRunner, ledger: Ledger) -> None:
    run(ledger.place_hold, user_id=1, bucket="credit", hold_key="h", amount_nanos=USD)

    run(ledger.release_hold, hold_key="h")

    status = run(lambda tx: tx.one("SELECT status FROM holds WHERE hold_key = 'h'"))
    assert status == ("released",)


def test_a_settlement_posts_the_users_lots_then_revenue_then_the_overrun_loss(
    run: TxRunner, ledger: Ledger
) -> None:
    run(ledger.place_hold, user_id=1, bucket="credit", hold_key="h", amount_nanos=2 * USD)

    settled = run(ledger.settle_hold, hold_key="h", actual_nanos=5 * USD)

    postings = run(
        lambda tx: tx.all(
            "SELECT a.code, p.amount_nanos, p.balance_after_nanos FROM postings p "
            "JOIN accounts a ON a.id = p.account_id WHERE p.entry_id = ? ORDER BY p.id",
            (settled.entry_id,),
        )
    )
    account = bucket_id(run)
    user_code = run(lambda tx: tx.one("SELECT code FROM accounts WHERE id = ?", (account,)))
    assert postings == [
        (user_code[0], -2 * USD, 8 * USD),
        ("revenue:usage:credit", 5 * USD, None),
        ("loss:overrun:credit", -3 * USD, None),
    ]
    assert run(reconcile, now_us=ledger.now_us(), grace_us=ledger.hold_grace_us).ok


def test_a_settlement_whose_revenue_account_is_missing_writes_nothing(
    run: TxRunner, ledger: Ledger
) -> None:
    """Never an entry that credits nobody: the whole settlement fails and the hold stays."""
    run(ledger.place_hold, user_id=1, bucket="credit", hold_key="h", amount_nanos=2 * USD)
    entries = run(lambda tx: tx.one("SELECT COUNT(*) FROM entries"))

    def settle_without_revenue(tx, **kw):  # type: ignore[no-untyped-def]
        tx.run("UPDATE accounts SET code = 'renamed' WHERE code = 'revenue:usage:credit'")
        return ledger.settle_hold(tx, **kw)

    with pytest.raises(Exception):  # noqa: B017,PT011 - the driver's error differs per database
        run(settle_without_revenue, hold_key="h", actual_nanos=USD)

    assert run(lambda tx: tx.one("SELECT status FROM holds WHERE hold_key = 'h'")) == ("pending",)
    assert run(lambda tx: tx.one("SELECT COUNT(*) FROM entries")) == entries
    run(ledger.release_hold, hold_key="h")
