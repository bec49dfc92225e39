"""Credits, debits, reversals, debt, platform transfers and idempotency (research/ledger.md §6:
T2, T3, T14; invariants I1, I3, I4, I6, I16). Every scenario runs on SQLite and PostgreSQL and
ends with a clean ``reconcile``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tallygate.db.engine import Database
from tallygate.errors import IdempotencyConflict
from tallygate.kit.money import MAX_NANOS
from tallygate.ledger import (
    AccountOwes,
    CurrencyMismatch,
    InsufficientBalance,
    InvalidAmount,
    Ledger,
    UnbalancedEntry,
    UnknownAccount,
)
from tallygate.ledger.entries import PostedEntry
from tallygate.ledger.reconcile import reconcile
from tallygate.ledger.tx import Tx, from_connection
from tests.conftest import TxRunner

USD = 1_000_000_000  # nano-units per currency unit
SANDBOX = "clearing:sandbox"
REVENUE = "revenue:usage"
REFUND = "clearing:stripe"


# ---- helpers -----------------------------------------------------------------------------------


def snapshot(run: TxRunner) -> dict[str, Any]:
    """Everything a refused call must leave untouched."""

    def read(tx: Tx) -> dict[str, Any]:
        return {
            "rows": {
                table: tx.one(f"SELECT COUNT(*) FROM {table}")[0]  # type: ignore[index]
                for table in ("accounts", "entries", "postings", "lots", "holds")
            },
            "accounts": tx.all("SELECT id, balance_nanos, held_nanos FROM accounts ORDER BY id"),
            "lots": tx.all("SELECT id, remaining_nanos, earmarked_nanos FROM lots ORDER BY id"),
            "holds": tx.all("SELECT hold_key, status FROM holds ORDER BY id"),
        }

    return run(read)


def postings_of(run: TxRunner, entry_id: int) -> list[tuple[str, int, int | None]]:
    """(account code, signed amount, lot id) of an entry's postings, in writing order."""
    rows = run(
        lambda tx: tx.all(
            "SELECT a.code, p.amount_nanos, p.lot_id FROM postings p "
            "JOIN accounts a ON a.id = p.account_id WHERE p.entry_id = ? ORDER BY p.id",
            (entry_id,),
        )
    )
    return [(str(code), int(amount), lot) for code, amount, lot in rows]


def lot_row(run: TxRunner, lot_id: int) -> dict[str, Any]:
    row = run(
        lambda tx: tx.one(
            "SELECT kind, priority, original_nanos, remaining_nanos, earmarked_nanos, "
            "expires_at, source_entry_id FROM lots WHERE id = ?",
            (lot_id,),
        )
    )
    names = ("kind", "priority", "original", "remaining", "earmarked", "expires_at", "source")
    return dict(zip(names, row, strict=True))


def key() -> str:
    return uuid.uuid4().hex


def top_up(
    run: TxRunner,
    ledger: Ledger,
    amount: int,
    *,
    user_id: int = 1,
    bucket: str = "credit",
    **kw: Any,
) -> PostedEntry:
    kw.setdefault("idempotency_key", key())
    kw.setdefault("kind", "topup")
    kw.setdefault("source", SANDBOX)
    return run(ledger.credit, user_id=user_id, bucket=bucket, amount_nanos=amount, **kw)


def spend(
    run: TxRunner,
    ledger: Ledger,
    amount: int,
    *,
    user_id: int = 1,
    bucket: str = "credit",
    **kw: Any,
) -> PostedEntry:
    kw.setdefault("idempotency_key", key())
    kw.setdefault("kind", "usage")
    kw.setdefault("destination", REVENUE)
    return run(ledger.debit, user_id=user_id, bucket=bucket, amount_nanos=amount, **kw)


def refund(
    run: TxRunner,
    ledger: Ledger,
    amount: int,
    *,
    user_id: int = 1,
    bucket: str = "credit",
    **kw: Any,
) -> PostedEntry:
    kw.setdefault("idempotency_key", key())
    kw.setdefault("kind", "refund")
    kw.setdefault("destination", REFUND)
    return run(ledger.reverse, user_id=user_id, bucket=bucket, amount_nanos=amount, **kw)


def balances(run: TxRunner, ledger: Ledger, user_id: int = 1, bucket: str = "credit") -> tuple:
    """(balance, held, debt, available) of a bucket."""
    b = run(ledger.balance, user_id, bucket)
    return (b.balance_nanos, b.held_nanos, b.debt_nanos, b.available_nanos)


@pytest.fixture(autouse=True)
def users(ledger: Ledger, run: TxRunner) -> Iterator[None]:
    """Users 1 and 2 have accounts; every scenario must leave the ledger reconciled."""
    run(ledger.open_user, 1)
    run(ledger.open_user, 2)
    yield
    report = run(reconcile, now_us=ledger.now_us(), grace_us=ledger.hold_grace_us)
    assert report.ok, report.problems


# ---- credits -----------------------------------------------------------------------------------


class TestCredit:
    def test_a_credit_opens_a_lot_holding_the_credited_amount(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        expires = ledger.now_us() + 3_600_000_000

        entry = top_up(
            run, ledger, 10 * USD, lot_kind="promo", lot_priority=5, lot_expires_at=expires
        )

        assert entry.replayed is False
        assert entry.extra["debt_repaid_nanos"] == 0
        assert lot_row(run, entry.extra["lot_id"]) == {
            "kind": "promo",
            "priority": 5,
            "original": 10 * USD,
            "remaining": 10 * USD,
            "earmarked": 0,
            "expires_at": expires,
            "source": entry.entry_id,
        }
        assert balances(run, ledger) == (10 * USD, 0, 0, 10 * USD)

    def test_a_credit_moves_value_from_the_named_platform_account_into_the_bucket(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        entry = top_up(run, ledger, 7 * USD, source="promo:redeem", kind="redeem")

        assert postings_of(run, entry.entry_id) == [
            ("promo:redeem:credit", -7 * USD, None),
            ("user:1:credit", 7 * USD, entry.extra["lot_id"]),
        ]

    def test_a_credit_records_its_kind_cause_and_memo(self, run: TxRunner, ledger: Ledger) -> None:
        entry = top_up(
            run, ledger, USD, kind="redeem", cause_type="code", cause_id="42", memo="welcome"
        )

        row = run(
            lambda tx: tx.one(
                "SELECT kind, cause_type, cause_id, memo FROM entries WHERE id = ?",
                (entry.entry_id,),
            )
        )
        assert tuple(row) == ("redeem", "code", "42", "welcome")

    def test_each_bucket_is_credited_in_its_own_currency(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        entry = top_up(run, ledger, 3 * USD, bucket="routed")

        assert {p.currency for p in entry.postings} == {"CNY"}
        assert run(ledger.balance, 1, "routed").currency == "CNY"
        assert balances(run, ledger, bucket="routed") == (3 * USD, 0, 0, 3 * USD)
        assert balances(run, ledger, bucket="credit") == (0, 0, 0, 0)

    def test_credits_to_one_user_leave_other_users_untouched(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 3 * USD, user_id=2)

        assert balances(run, ledger, user_id=2) == (3 * USD, 0, 0, 3 * USD)
        assert balances(run, ledger, user_id=1) == (0, 0, 0, 0)


# ---- debits ------------------------------------------------------------------------------------


class TestDebit:
    def test_a_debit_moves_available_value_to_the_destination(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        lot = top_up(run, ledger, 10 * USD).extra["lot_id"]

        entry = spend(run, ledger, 4 * USD)

        assert entry.extra["taken_nanos"] == 4 * USD
        assert postings_of(run, entry.entry_id) == [
            ("user:1:credit", -4 * USD, lot),
            ("revenue:usage:credit", 4 * USD, None),
        ]
        assert balances(run, ledger) == (6 * USD, 0, 0, 6 * USD)

    def test_a_debit_of_exactly_the_available_balance_empties_the_bucket(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)

        spend(run, ledger, 10 * USD)

        assert balances(run, ledger) == (0, 0, 0, 0)

    def test_a_debit_beyond_the_balance_is_refused_naming_the_shortfall(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        before = snapshot(run)

        with pytest.raises(InsufficientBalance) as refused:
            spend(run, ledger, 12 * USD)

        assert refused.value.message == "insufficient balance in bucket credit: short by 2.00 USD"
        assert refused.value.code == "insufficient_balance"
        assert refused.value.shortfall_nanos == 2 * USD
        assert refused.value.available_nanos == 10 * USD
        assert snapshot(run) == before

    def test_a_debit_cannot_take_value_reserved_by_a_hold(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=7 * USD, hold_key="h")

        with pytest.raises(InsufficientBalance, match="short by 1.00 USD"):
            spend(run, ledger, 4 * USD)
        spend(run, ledger, 3 * USD)

        assert balances(run, ledger) == (7 * USD, 7 * USD, 0, 0)
        run(ledger.release_hold, hold_key="h")

    def test_a_debit_never_spills_into_the_other_bucket(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD, bucket="routed")

        with pytest.raises(InsufficientBalance, match="bucket credit"):
            spend(run, ledger, USD, bucket="credit")

        assert balances(run, ledger, bucket="routed") == (10 * USD, 0, 0, 10 * USD)


# ---- reversals and debt ------------------------------------------------------------------------


class TestReverse:
    def test_a_reversal_within_the_balance_books_no_debt(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)

        entry = refund(run, ledger, 4 * USD)

        assert entry.extra == {"taken_nanos": 4 * USD, "debt_booked_nanos": 0}
        assert balances(run, ledger) == (6 * USD, 0, 0, 6 * USD)

    def test_a_reversal_beyond_the_balance_empties_the_bucket_and_books_the_rest_as_debt(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        lot = top_up(run, ledger, 10 * USD).extra["lot_id"]
        spend(run, ledger, 8 * USD)

        entry = refund(run, ledger, 10 * USD)

        assert entry.extra == {"taken_nanos": 2 * USD, "debt_booked_nanos": 8 * USD}
        assert postings_of(run, entry.entry_id) == [
            ("user:1:credit", -2 * USD, lot),
            ("user:1:credit:debt", -8 * USD, None),
            ("clearing:stripe:credit", 10 * USD, None),
        ]
        assert balances(run, ledger) == (0, 0, 8 * USD, 0)

    def test_a_reversal_of_a_specific_lot_takes_that_lot_before_the_draw_order(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        paid = top_up(run, ledger, 10 * USD).extra["lot_id"]
        promo = top_up(run, ledger, 10 * USD, lot_kind="promo", lot_priority=1).extra["lot_id"]

        entry = refund(run, ledger, 3 * USD, lot_id=paid)

        assert postings_of(run, entry.entry_id)[0] == ("user:1:credit", -3 * USD, paid)
        assert lot_row(run, paid)["remaining"] == 7 * USD
        assert lot_row(run, promo)["remaining"] == 10 * USD

    def test_a_reversal_larger_than_its_lot_continues_in_draw_order_then_books_debt(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        early = top_up(run, ledger, 5 * USD, lot_priority=1).extra["lot_id"]
        late = top_up(run, ledger, 5 * USD, lot_priority=9).extra["lot_id"]
        later = top_up(run, ledger, 5 * USD, lot_priority=5).extra["lot_id"]
        spend(run, ledger, 2 * USD)  # from `early`, the first in draw order

        entry = refund(run, ledger, 16 * USD, lot_id=late)

        assert postings_of(run, entry.entry_id) == [
            ("user:1:credit", -5 * USD, late),
            ("user:1:credit", -3 * USD, early),
            ("user:1:credit", -5 * USD, later),
            ("user:1:credit:debt", -3 * USD, None),
            ("clearing:stripe:credit", 16 * USD, None),
        ]
        assert balances(run, ledger) == (0, 0, 3 * USD, 0)

    def test_a_reversal_never_takes_value_reserved_by_a_pending_hold(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=6 * USD, hold_key="h")

        entry = refund(run, ledger, 10 * USD)

        assert entry.extra == {"taken_nanos": 4 * USD, "debt_booked_nanos": 6 * USD}
        assert balances(run, ledger) == (6 * USD, 6 * USD, 6 * USD, 0)
        settled = run(ledger.settle_hold, hold_key="h", actual_nanos=6 * USD)
        assert settled.charged_nanos == 6 * USD
        assert balances(run, ledger) == (0, 0, 6 * USD, 0)


class TestDebt:
    def test_refund_after_spend_books_debt_blocks_holds_and_the_next_top_up_repays_it(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        """T14 (research/ledger.md §6.3), with the spend that makes its numbers add up: top up
        10, spend 2 (8 left), full refund of 10 → bucket 0, debt 2; a top-up of 5 → debt 0, 3."""
        top_up(run, ledger, 10 * USD)
        spend(run, ledger, 2 * USD)

        refund(run, ledger, 10 * USD)

        assert balances(run, ledger) == (0, 0, 2 * USD, 0)
        with pytest.raises(AccountOwes) as owes:
            run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=1, hold_key="h1")
        assert owes.value.code == "account_owes"
        assert owes.value.status == 402
        assert owes.value.debt_nanos == 2 * USD

        repaid = top_up(run, ledger, 5 * USD)

        assert repaid.extra["debt_repaid_nanos"] == 2 * USD
        assert lot_row(run, repaid.extra["lot_id"])["remaining"] == 3 * USD
        assert postings_of(run, repaid.entry_id) == [
            ("clearing:sandbox:credit", -5 * USD, None),
            ("user:1:credit:debt", 2 * USD, None),
            ("user:1:credit", 3 * USD, repaid.extra["lot_id"]),
        ]
        assert balances(run, ledger) == (3 * USD, 0, 0, 3 * USD)
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=3 * USD, hold_key="h2")
        run(ledger.release_hold, hold_key="h2")

    def test_refund_of_a_top_up_mostly_spent_owes_the_spent_part(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        """T14 as literally worded: top up 10, spend 8, refund 10 → bucket 0, debt 8."""
        top_up(run, ledger, 10 * USD)
        spend(run, ledger, 8 * USD)

        refund(run, ledger, 10 * USD)

        assert balances(run, ledger) == (0, 0, 8 * USD, 0)

    def test_a_top_up_smaller_than_the_debt_repays_part_of_it_and_opens_no_lot(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        spend(run, ledger, 8 * USD)
        refund(run, ledger, 10 * USD)

        partial = top_up(run, ledger, 5 * USD)

        assert partial.extra == {"lot_id": None, "debt_repaid_nanos": 5 * USD}
        assert balances(run, ledger) == (0, 0, 3 * USD, 0)
        with pytest.raises(AccountOwes):
            run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=1, hold_key="h")

        rest = top_up(run, ledger, 5 * USD)

        assert rest.extra["debt_repaid_nanos"] == 3 * USD
        assert balances(run, ledger) == (2 * USD, 0, 0, 2 * USD)

    def test_debt_blocks_only_its_own_bucket_and_user(self, run: TxRunner, ledger: Ledger) -> None:
        refund(run, ledger, 5 * USD)  # nothing to take: all of it is debt
        top_up(run, ledger, 5 * USD, bucket="routed")
        top_up(run, ledger, 5 * USD, user_id=2)

        run(ledger.place_hold, user_id=1, bucket="routed", amount_nanos=USD, hold_key="r")
        run(ledger.place_hold, user_id=2, bucket="credit", amount_nanos=USD, hold_key="u2")

        assert balances(run, ledger) == (0, 0, 5 * USD, 0)
        run(ledger.release_hold, hold_key="r")
        run(ledger.release_hold, hold_key="u2")

    def test_debt_blocks_a_hold_even_when_the_bucket_has_value(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=10 * USD, hold_key="h")
        refund(run, ledger, 3 * USD)  # everything is reserved: all of it is debt
        run(ledger.release_hold, hold_key="h")
        before = snapshot(run)

        with pytest.raises(AccountOwes):
            run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=USD, hold_key="h2")

        assert balances(run, ledger) == (10 * USD, 0, 3 * USD, 10 * USD)
        assert snapshot(run) == before


# ---- refused input writes nothing ----------------------------------------------------------------

BAD_AMOUNTS = [0, -5, 1.5, True, "5", Decimal(5), MAX_NANOS + 1]


class TestRefusedInput:
    @pytest.fixture(autouse=True)
    def funded(self, run: TxRunner, ledger: Ledger) -> None:
        top_up(run, ledger, 10 * USD)

    @pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
    @pytest.mark.parametrize("operation", [top_up, spend, refund], ids=lambda f: f.__name__)
    def test_an_amount_that_is_not_a_positive_integer_is_refused_and_nothing_is_written(
        self, run: TxRunner, ledger: Ledger, operation: Any, amount: object
    ) -> None:
        before = snapshot(run)

        with pytest.raises(InvalidAmount):
            operation(run, ledger, amount)

        assert snapshot(run) == before

    @pytest.mark.parametrize("operation", [top_up, spend, refund], ids=lambda f: f.__name__)
    def test_an_unknown_bucket_is_refused_and_nothing_is_written(
        self, run: TxRunner, ledger: Ledger, operation: Any
    ) -> None:
        before = snapshot(run)

        with pytest.raises(UnknownAccount, match="unknown bucket 'gold'"):
            operation(run, ledger, USD, bucket="gold")

        assert snapshot(run) == before

    @pytest.mark.parametrize("operation", [top_up, spend, refund], ids=lambda f: f.__name__)
    def test_a_user_without_accounts_is_refused_and_nothing_is_written(
        self, run: TxRunner, ledger: Ledger, operation: Any
    ) -> None:
        before = snapshot(run)

        with pytest.raises(UnknownAccount, match="user 99 has no credit account"):
            operation(run, ledger, USD, user_id=99)

        assert snapshot(run) == before

    @pytest.mark.parametrize(
        ("operation", "field"),
        [(top_up, "source"), (spend, "destination"), (refund, "destination")],
        ids=lambda v: getattr(v, "__name__", v),
    )
    def test_an_unknown_platform_account_is_refused_and_nothing_is_written(
        self, run: TxRunner, ledger: Ledger, operation: Any, field: str
    ) -> None:
        before = snapshot(run)

        with pytest.raises(UnknownAccount, match="clearing:paypal"):
            operation(run, ledger, USD, **{field: "clearing:paypal"})

        assert snapshot(run) == before

    def test_an_unknown_lot_kind_is_refused_and_nothing_is_written(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        before = snapshot(run)

        with pytest.raises(InvalidAmount, match="lot kind"):
            top_up(run, ledger, USD, lot_kind="gift")

        assert snapshot(run) == before


# ---- platform transfers ----------------------------------------------------------------------


def platform_total(run: TxRunner, code: str) -> int:
    row = run(
        lambda tx: tx.one(
            "SELECT COALESCE(SUM(p.amount_nanos), 0) FROM postings p "
            "JOIN accounts a ON a.id = p.account_id WHERE a.code = ?",
            (code,),
        )
    )
    return int(row[0])


class TestTransfer:
    def test_a_balanced_transfer_posts_each_leg_to_its_platform_account(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        entry = run(
            ledger.transfer,
            legs=[
                ("loss:chargeback", "credit", -5 * USD, "USD"),
                ("clearing:stripe", "credit", 5 * USD, "USD"),
            ],
            kind="correction",
            idempotency_key="t1",
        )

        assert entry.replayed is False
        assert postings_of(run, entry.entry_id) == [
            ("loss:chargeback:credit", -5 * USD, None),
            ("clearing:stripe:credit", 5 * USD, None),
        ]
        assert platform_total(run, "loss:chargeback:credit") == -5 * USD

    @pytest.mark.parametrize(
        ("legs", "error", "message"),
        [
            pytest.param(
                [("adjust:admin", "credit", -5, "USD"), ("adjust:admin", "routed", 5, "USD")],
                CurrencyMismatch,
                "adjust:admin:routed is in CNY, not USD",
                id="currency-mismatch",
            ),
            pytest.param(
                [("adjust:admin", "credit", -5, "USD"), ("loss:chargeback", "credit", 4, "USD")],
                UnbalancedEntry,
                "do not sum to zero",
                id="unbalanced",
            ),
            pytest.param(
                [("adjust:admin", "credit", -5, "USD"), ("adjust:admin", "routed", 5, "CNY")],
                UnbalancedEntry,
                "do not sum to zero",
                id="balanced-across-currencies-only",
            ),
            pytest.param(
                [("adjust:admin", "credit", -5, "USD")],
                UnbalancedEntry,
                "at least two postings",
                id="one-leg",
            ),
            pytest.param(
                [("adjust:admin", "credit", 0, "USD"), ("loss:chargeback", "credit", 0, "USD")],
                InvalidAmount,
                "non-zero integer",
                id="zero-legs",
            ),
            pytest.param(
                [
                    ("adjust:admin", "credit", -0.5, "USD"),
                    ("loss:chargeback", "credit", 0.5, "USD"),
                ],
                InvalidAmount,
                "non-zero integer",
                id="float-legs",
            ),
            pytest.param(
                [("adjust:paypal", "credit", -5, "USD"), ("loss:chargeback", "credit", 5, "USD")],
                UnknownAccount,
                "adjust:paypal",
                id="unknown-platform-account",
            ),
            pytest.param(
                [("user:1", "credit", -5, "USD"), ("loss:chargeback", "credit", 5, "USD")],
                UnknownAccount,
                "user:1",
                id="user-account",
            ),
        ],
    )
    def test_a_transfer_that_does_not_balance_per_currency_is_refused_and_nothing_is_written(
        self,
        run: TxRunner,
        ledger: Ledger,
        legs: list[tuple[str, str, Any, str]],
        error: type[Exception],
        message: str,
    ) -> None:
        before = snapshot(run)

        with pytest.raises(error, match=message):
            run(ledger.transfer, legs=legs, kind="correction", idempotency_key="t")

        assert snapshot(run) == before


# ---- idempotency -------------------------------------------------------------------------------


class TestIdempotentReplay:
    """T2: the same key with the same request returns the original entry and writes nothing."""

    def test_a_resubmitted_credit_replays_its_entry(self, run: TxRunner, ledger: Ledger) -> None:
        first = top_up(run, ledger, 10 * USD, idempotency_key="order-1")
        before = snapshot(run)

        again = top_up(run, ledger, 10 * USD, idempotency_key="order-1")

        assert again.replayed is True
        assert again.entry_id == first.entry_id
        assert again.extra["lot_id"] == first.extra["lot_id"]
        assert snapshot(run) == before
        assert balances(run, ledger) == (10 * USD, 0, 0, 10 * USD)

    def test_a_resubmitted_credit_that_repaid_debt_replays_the_repayment(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        refund(run, ledger, 2 * USD)
        first = top_up(run, ledger, 5 * USD, idempotency_key="order-1")
        before = snapshot(run)

        again = top_up(run, ledger, 5 * USD, idempotency_key="order-1")

        assert again.replayed is True
        assert again.extra["debt_repaid_nanos"] == first.extra["debt_repaid_nanos"] == 2 * USD
        assert snapshot(run) == before

    def test_a_resubmitted_debit_replays_even_when_the_balance_no_longer_covers_it(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        first = spend(run, ledger, 8 * USD, idempotency_key="req-1")
        before = snapshot(run)

        again = spend(run, ledger, 8 * USD, idempotency_key="req-1")

        assert again.replayed is True
        assert again.entry_id == first.entry_id
        assert again.extra["taken_nanos"] == 8 * USD
        assert snapshot(run) == before

    def test_a_resubmitted_reversal_books_its_debt_once(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        spend(run, ledger, 8 * USD)
        first = refund(run, ledger, 10 * USD, idempotency_key="re-1")
        before = snapshot(run)

        again = refund(run, ledger, 10 * USD, idempotency_key="re-1")

        assert again.replayed is True
        assert again.entry_id == first.entry_id
        assert again.extra["debt_booked_nanos"] == 8 * USD
        assert snapshot(run) == before
        assert balances(run, ledger) == (0, 0, 8 * USD, 0)

    def test_a_resubmitted_transfer_replays_its_entry(self, run: TxRunner, ledger: Ledger) -> None:
        legs = [("adjust:admin", "credit", -5, "USD"), ("loss:chargeback", "credit", 5, "USD")]
        first = run(ledger.transfer, legs=legs, kind="correction", idempotency_key="t1")
        before = snapshot(run)

        again = run(ledger.transfer, legs=legs, kind="correction", idempotency_key="t1")

        assert again.replayed is True
        assert again.entry_id == first.entry_id
        assert snapshot(run) == before

    def test_a_refused_debit_leaves_its_key_unused(self, run: TxRunner, ledger: Ledger) -> None:
        top_up(run, ledger, 10 * USD)
        with pytest.raises(InsufficientBalance):
            spend(run, ledger, 12 * USD, idempotency_key="req-1")
        top_up(run, ledger, 5 * USD)

        later = spend(run, ledger, 12 * USD, idempotency_key="req-1")

        assert later.replayed is False
        assert balances(run, ledger) == (3 * USD, 0, 0, 3 * USD)


class TestIdempotencyConflict:
    """T3: the same key with any field changed is refused, naming the field; nothing changes."""

    @pytest.mark.parametrize(
        ("field", "changed"),
        [
            ("amount", {"amount": 11 * USD}),
            ("user_id", {"user_id": 2}),
            ("bucket", {"bucket": "routed"}),
            ("source", {"source": "promo:redeem"}),
            ("kind", {"kind": "redeem"}),
            ("lot_kind", {"lot_kind": "promo"}),
            ("lot_priority", {"lot_priority": 1}),
            ("lot_expires_at", {"lot_expires_at": 1}),
            ("cause_id", {"cause_id": "order-2"}),
        ],
    )
    def test_a_credit_key_reused_with_a_different_field_is_a_conflict_naming_it(
        self, run: TxRunner, ledger: Ledger, field: str, changed: dict[str, Any]
    ) -> None:
        original: dict[str, Any] = {"amount": 10 * USD, "cause_type": "order", "cause_id": "o-1"}
        top_up(run, ledger, original.pop("amount"), idempotency_key="k", **original)
        before = snapshot(run)
        request = {"amount": 10 * USD, **original, **changed}

        with pytest.raises(IdempotencyConflict) as conflict:
            top_up(run, ledger, request.pop("amount"), idempotency_key="k", **request)

        assert conflict.value.details["differs"] == [field]
        assert f"differs in: {field}" in conflict.value.message
        assert conflict.value.status == 409
        assert snapshot(run) == before

    @pytest.mark.parametrize(
        ("field", "changed"),
        [("amount", {"amount": 3 * USD}), ("destination", {"destination": "adjust:admin"})],
    )
    def test_a_debit_key_reused_with_a_different_field_is_a_conflict_naming_it(
        self, run: TxRunner, ledger: Ledger, field: str, changed: dict[str, Any]
    ) -> None:
        top_up(run, ledger, 10 * USD)
        spend(run, ledger, 2 * USD, idempotency_key="k")
        before = snapshot(run)
        request = {"amount": 2 * USD, **changed}

        with pytest.raises(IdempotencyConflict, match=f"differs in: {field}"):
            spend(run, ledger, request.pop("amount"), idempotency_key="k", **request)

        assert snapshot(run) == before

    def test_a_debit_key_reused_beyond_the_balance_is_a_conflict_not_a_refusal(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        spend(run, ledger, 2 * USD, idempotency_key="k")

        with pytest.raises(IdempotencyConflict, match="differs in: amount"):
            spend(run, ledger, 50 * USD, idempotency_key="k")

    @pytest.mark.parametrize(
        ("field", "changed"),
        [("amount", {"amount": 3 * USD}), ("lot_id", {"lot_id": 12345})],
    )
    def test_a_reversal_key_reused_with_a_different_field_is_a_conflict_naming_it(
        self, run: TxRunner, ledger: Ledger, field: str, changed: dict[str, Any]
    ) -> None:
        top_up(run, ledger, 10 * USD)
        refund(run, ledger, 2 * USD, idempotency_key="k")
        before = snapshot(run)
        request = {"amount": 2 * USD, **changed}

        with pytest.raises(IdempotencyConflict, match=f"differs in: {field}"):
            refund(run, ledger, request.pop("amount"), idempotency_key="k", **request)

        assert snapshot(run) == before

    def test_a_key_used_by_a_credit_cannot_be_reused_by_a_debit(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD, idempotency_key="k")
        before = snapshot(run)

        with pytest.raises(IdempotencyConflict) as conflict:
            spend(run, ledger, 10 * USD, idempotency_key="k", kind="topup")

        assert conflict.value.details["differs"] == [
            "destination",
            "lot_kind",
            "lot_priority",
            "op",
            "source",
        ]
        assert snapshot(run) == before

    def test_a_transfer_key_reused_with_different_legs_is_a_conflict_naming_them(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        legs = [("adjust:admin", "credit", -5, "USD"), ("loss:chargeback", "credit", 5, "USD")]
        run(ledger.transfer, legs=legs, kind="correction", idempotency_key="t1")
        before = snapshot(run)
        other = [("adjust:admin", "credit", -6, "USD"), ("loss:chargeback", "credit", 6, "USD")]

        with pytest.raises(IdempotencyConflict, match="differs in: legs"):
            run(ledger.transfer, legs=other, kind="correction", idempotency_key="t1")

        assert snapshot(run) == before


# ---- account id caches -------------------------------------------------------------------------


class TestAccountCache:
    def test_accounts_opened_in_a_rolled_back_transaction_are_not_remembered(
        self, db: Database, run: TxRunner, ledger: Ledger
    ) -> None:
        """A signup that opens a user's accounts and grants a credit in one transaction, then
        rolls back, must not leave the ledger pointing at accounts that no longer exist — or,
        once their ids are reused, at another user's accounts."""
        with pytest.raises(UnknownAccount), db.begin() as conn:
            tx = from_connection(conn)
            ledger.open_user(tx, 5)
            top_up_in = dict(kind="topup", idempotency_key="signup-5", amount_nanos=USD)
            ledger.credit(tx, user_id=5, bucket="credit", source="clearing:nope", **top_up_in)
        run(ledger.open_user, 6)  # may take the ids the rolled-back accounts had
        run(ledger.open_user, 5)

        top_up(run, ledger, 10 * USD, user_id=5)

        stored = dict(
            run(
                lambda tx: tx.all(
                    "SELECT code, balance_nanos FROM accounts "
                    "WHERE code IN ('user:5:credit', 'user:6:credit')"
                )
            )
        )
        assert stored == {"user:5:credit": 10 * USD, "user:6:credit": 0}
