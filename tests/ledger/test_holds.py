"""Holds: pending → settled | released | expired, exactly once (research/ledger.md §6: I7, I15,
I16, T6, T11 sequentially, T22, T23). Every scenario runs on SQLite and PostgreSQL and ends with
a clean ``reconcile``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tallygate.errors import BadRequest, IdempotencyConflict
from tallygate.kit.clock import FrozenClock
from tallygate.ledger import (
    AccountOwes,
    HoldNotFound,
    HoldNotPending,
    InsufficientBalance,
    InvalidAmount,
    Ledger,
    UnknownAccount,
)
from tallygate.ledger.holds import Hold
from tallygate.ledger.reconcile import reconcile
from tallygate.ledger.tx import Tx
from tests.conftest import TxRunner

USD = 1_000_000_000
TTL_S = 600  # the `ledger` fixture's hold TTL
GRACE_S = 60  # and its grace period


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


def top_up(run: TxRunner, ledger: Ledger, amount: int, *, user_id: int = 1, **kw: Any) -> int:
    """Credit user 1's credit bucket; returns the lot opened."""
    kw.setdefault("bucket", "credit")
    entry = run(
        ledger.credit,
        user_id=user_id,
        amount_nanos=amount,
        kind="topup",
        source="clearing:sandbox",
        idempotency_key=uuid.uuid4().hex,
        **kw,
    )
    return int(entry.extra["lot_id"])


def hold(run: TxRunner, ledger: Ledger, amount: int, key: str = "h", **kw: Any) -> Hold:
    kw.setdefault("user_id", 1)
    kw.setdefault("bucket", "credit")
    return run(ledger.place_hold, amount_nanos=amount, hold_key=key, **kw)


def balances(run: TxRunner, ledger: Ledger, user_id: int = 1, bucket: str = "credit") -> tuple:
    """(balance, held, debt, available) of a bucket."""
    b = run(ledger.balance, user_id, bucket)
    return (b.balance_nanos, b.held_nanos, b.debt_nanos, b.available_nanos)


def hold_row(run: TxRunner, key: str) -> tuple:
    return tuple(
        run(
            lambda tx: tx.one(
                "SELECT status, settled_nanos, overrun_nanos FROM holds WHERE hold_key = ?", (key,)
            )
        )
    )


def account_total(run: TxRunner, code: str) -> int:
    row = run(
        lambda tx: tx.one(
            "SELECT COALESCE(SUM(p.amount_nanos), 0) FROM postings p "
            "JOIN accounts a ON a.id = p.account_id WHERE a.code = ?",
            (code,),
        )
    )
    return int(row[0])


def entry_count(run: TxRunner) -> int:
    return int(run(lambda tx: tx.one("SELECT COUNT(*) FROM entries"))[0])


@pytest.fixture(autouse=True)
def users(ledger: Ledger, run: TxRunner) -> Iterator[None]:
    """User 1 has accounts; every scenario must leave the ledger reconciled."""
    run(ledger.open_user, 1)
    yield
    report = run(reconcile, now_us=ledger.now_us(), grace_us=ledger.hold_grace_us)
    assert report.ok, report.problems


class TestPlaceHold:
    def test_a_hold_reserves_value_without_moving_it(self, run: TxRunner, ledger: Ledger) -> None:
        top_up(run, ledger, 10 * USD)
        entries_before = entry_count(run)

        placed = hold(run, ledger, 4 * USD)

        assert (placed.status, placed.amount_nanos, placed.replayed) == ("pending", 4 * USD, False)
        assert placed.expires_at == ledger.now_us() + TTL_S * 1_000_000
        assert balances(run, ledger) == (10 * USD, 4 * USD, 0, 6 * USD)
        assert entry_count(run) == entries_before
        run(ledger.release_hold, hold_key="h")

    def test_holds_may_reserve_exactly_the_available_balance_and_no_more(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 6 * USD, "a")
        hold(run, ledger, 4 * USD, "b")
        before = snapshot(run)

        with pytest.raises(InsufficientBalance) as refused:
            hold(run, ledger, 1, "c")

        assert refused.value.message == (
            "insufficient balance in bucket credit: short by 0.000000001 USD"
        )
        assert balances(run, ledger) == (10 * USD, 10 * USD, 0, 0)
        assert snapshot(run) == before
        run(ledger.release_hold, hold_key="a")
        run(ledger.release_hold, hold_key="b")

    def test_a_hold_beyond_the_available_balance_is_refused_naming_the_shortfall(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        before = snapshot(run)

        with pytest.raises(InsufficientBalance) as refused:
            hold(run, ledger, 12 * USD)

        assert refused.value.message == "insufficient balance in bucket credit: short by 2.00 USD"
        assert refused.value.status == 402
        assert snapshot(run) == before

    def test_a_hold_is_refused_with_account_owes_while_the_bucket_has_debt(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        run(
            ledger.reverse,
            user_id=1,
            bucket="credit",
            amount_nanos=USD,
            kind="refund",
            destination="clearing:stripe",
            idempotency_key="r",
        )
        before = snapshot(run)

        with pytest.raises(AccountOwes, match="outstanding debt of 1.00 USD"):
            hold(run, ledger, 1)

        assert snapshot(run) == before

    @pytest.mark.parametrize("amount", [0, -1, 1.5, True, "1"], ids=repr)
    def test_a_hold_of_anything_but_a_positive_integer_is_refused_and_nothing_is_written(
        self, run: TxRunner, ledger: Ledger, amount: object
    ) -> None:
        top_up(run, ledger, 10 * USD)
        before = snapshot(run)

        with pytest.raises(InvalidAmount):
            hold(run, ledger, amount)  # type: ignore[arg-type]

        assert snapshot(run) == before

    def test_a_hold_on_an_unknown_bucket_is_refused_and_nothing_is_written(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        before = snapshot(run)

        with pytest.raises(UnknownAccount):
            hold(run, ledger, 1, bucket="gold")

        assert snapshot(run) == before

    def test_a_hold_takes_a_custom_ttl(self, run: TxRunner, ledger: Ledger) -> None:
        top_up(run, ledger, 10 * USD)

        placed = hold(run, ledger, USD, ttl_seconds=30)

        assert placed.expires_at == ledger.now_us() + 30_000_000
        run(ledger.release_hold, hold_key="h")


class TestHoldIdempotency:
    def test_a_resubmitted_hold_returns_the_original_and_reserves_nothing_more(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        first = hold(run, ledger, 4 * USD)
        before = snapshot(run)

        again = hold(run, ledger, 4 * USD)

        assert again.replayed is True
        assert (again.status, again.amount_nanos, again.expires_at) == (
            "pending",
            4 * USD,
            first.expires_at,
        )
        assert snapshot(run) == before
        run(ledger.release_hold, hold_key="h")

    def test_a_resubmitted_hold_replays_even_when_it_no_longer_fits(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 8 * USD)

        again = hold(run, ledger, 8 * USD)  # only 2 available now

        assert again.replayed is True
        assert balances(run, ledger) == (10 * USD, 8 * USD, 0, 2 * USD)
        run(ledger.release_hold, hold_key="h")

    def test_a_resubmitted_hold_after_settlement_reports_it_settled(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)
        before = snapshot(run)

        again = hold(run, ledger, 4 * USD)

        assert (again.replayed, again.status) == (True, "settled")
        assert snapshot(run) == before

    @pytest.mark.parametrize("available", [True, False], ids=["fits", "does-not-fit"])
    def test_a_hold_key_reused_with_a_different_amount_is_a_conflict_naming_it(
        self, run: TxRunner, ledger: Ledger, available: bool
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        before = snapshot(run)

        with pytest.raises(IdempotencyConflict) as conflict:
            hold(run, ledger, (5 if available else 50) * USD)

        assert conflict.value.details["differs"] == ["amount"]
        assert "amount" in conflict.value.message
        assert snapshot(run) == before
        run(ledger.release_hold, hold_key="h")

    def test_a_hold_key_reused_on_another_bucket_is_a_conflict_naming_the_account(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        top_up(run, ledger, 10 * USD, bucket="routed")
        hold(run, ledger, 4 * USD)
        before = snapshot(run)

        with pytest.raises(IdempotencyConflict) as conflict:
            hold(run, ledger, 4 * USD, bucket="routed")

        assert conflict.value.details["differs"] == ["account"]
        assert snapshot(run) == before
        run(ledger.release_hold, hold_key="h")


class TestSettle:
    @pytest.mark.parametrize("actual", [1, 3 * USD, 4 * USD - 1, 4 * USD])
    def test_settling_at_most_the_hold_charges_the_actual_and_releases_the_rest_exactly(
        self, run: TxRunner, ledger: Ledger, actual: int
    ) -> None:
        """T6: posting 0 < k ≤ hold releases exactly hold − k."""
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)

        settled = run(ledger.settle_hold, hold_key="h", actual_nanos=actual)

        assert (settled.charged_nanos, settled.overrun_nanos) == (actual, 0)
        assert settled.released_nanos == 4 * USD - actual
        assert settled.balance_after_nanos == 10 * USD - actual
        assert balances(run, ledger) == (10 * USD - actual, 0, 0, 10 * USD - actual)
        assert hold_row(run, "h") == ("settled", actual, 0)
        assert account_total(run, "revenue:usage:credit") == actual

    def test_settling_zero_charges_nothing_and_writes_no_entry(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        entries_before = entry_count(run)

        settled = run(ledger.settle_hold, hold_key="h", actual_nanos=0)

        assert (settled.charged_nanos, settled.released_nanos, settled.entry_id) == (
            0,
            4 * USD,
            None,
        )
        assert entry_count(run) == entries_before
        assert balances(run, ledger) == (10 * USD, 0, 0, 10 * USD)

    def test_usage_beyond_the_hold_charges_the_hold_and_books_the_excess_as_overrun_loss(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        """T22."""
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)

        settled = run(ledger.settle_hold, hold_key="h", actual_nanos=7 * USD)

        assert (settled.charged_nanos, settled.overrun_nanos, settled.released_nanos) == (
            4 * USD,
            3 * USD,
            0,
        )
        assert balances(run, ledger) == (6 * USD, 0, 0, 6 * USD)
        assert account_total(run, "loss:overrun:credit") == -3 * USD
        assert account_total(run, "revenue:usage:credit") == 7 * USD
        assert hold_row(run, "h") == ("settled", 4 * USD, 3 * USD)

    @pytest.mark.parametrize("actual", [0, 3 * USD, 7 * USD], ids=["zero", "under", "overrun"])
    def test_settling_twice_with_the_same_actual_replays_the_settlement(
        self, run: TxRunner, ledger: Ledger, actual: int
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        first = run(ledger.settle_hold, hold_key="h", actual_nanos=actual)
        before = snapshot(run)

        again = run(ledger.settle_hold, hold_key="h", actual_nanos=actual)

        assert again.replayed is True
        assert (again.charged_nanos, again.overrun_nanos, again.released_nanos) == (
            first.charged_nanos,
            first.overrun_nanos,
            first.released_nanos,
        )
        assert again.entry_id == first.entry_id
        assert snapshot(run) == before

    def test_a_replayed_settlement_reports_the_balance_after_the_original(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)
        top_up(run, ledger, 5 * USD)

        again = run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)

        assert again.balance_after_nanos == 7 * USD

    def test_settling_again_with_a_different_actual_is_refused(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)
        before = snapshot(run)

        with pytest.raises(HoldNotPending, match="already settled") as refused:
            run(ledger.settle_hold, hold_key="h", actual_nanos=2 * USD)

        assert refused.value.hold_status == "settled"
        assert snapshot(run) == before

    def test_settling_a_released_hold_is_refused_and_charges_nothing(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        run(ledger.release_hold, hold_key="h")
        before = snapshot(run)

        with pytest.raises(HoldNotPending, match="already released"):
            run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)

        assert snapshot(run) == before
        assert balances(run, ledger) == (10 * USD, 0, 0, 10 * USD)

    def test_settling_an_unknown_hold_is_refused(self, run: TxRunner, ledger: Ledger) -> None:
        with pytest.raises(HoldNotFound):
            run(ledger.settle_hold, hold_key="nope", actual_nanos=1)

    @pytest.mark.parametrize("actual", [-1, 1.5, True], ids=repr)
    def test_settling_with_an_invalid_actual_is_refused_and_the_hold_stays_pending(
        self, run: TxRunner, ledger: Ledger, actual: object
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        before = snapshot(run)

        with pytest.raises(InvalidAmount):
            run(ledger.settle_hold, hold_key="h", actual_nanos=actual)

        assert snapshot(run) == before
        run(ledger.release_hold, hold_key="h")

    def test_a_settlement_draws_from_the_lots_the_hold_earmarked(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        first = top_up(run, ledger, 3 * USD, lot_priority=1)
        second = top_up(run, ledger, 10 * USD, lot_priority=2)
        hold(run, ledger, 5 * USD)

        settled = run(ledger.settle_hold, hold_key="h", actual_nanos=4 * USD)

        drawn = run(
            lambda tx: tx.all(
                "SELECT lot_id, amount_nanos FROM postings WHERE entry_id = ? "
                "AND lot_id IS NOT NULL ORDER BY id",
                (settled.entry_id,),
            )
        )
        assert [tuple(r) for r in drawn] == [(first, -3 * USD), (second, -USD)]


class TestRelease:
    def test_releasing_a_hold_returns_all_of_it(self, run: TxRunner, ledger: Ledger) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        entries_before = entry_count(run)

        released = run(ledger.release_hold, hold_key="h")

        assert (released.status, released.replayed) == ("released", False)
        assert balances(run, ledger) == (10 * USD, 0, 0, 10 * USD)
        assert entry_count(run) == entries_before

    def test_releasing_twice_replays(self, run: TxRunner, ledger: Ledger) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        run(ledger.release_hold, hold_key="h")
        before = snapshot(run)

        again = run(ledger.release_hold, hold_key="h")

        assert (again.status, again.replayed) == ("released", True)
        assert snapshot(run) == before

    def test_releasing_a_settled_hold_is_refused_and_keeps_the_charge(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)
        before = snapshot(run)

        with pytest.raises(HoldNotPending, match="already settled"):
            run(ledger.release_hold, hold_key="h")

        assert snapshot(run) == before
        assert balances(run, ledger) == (7 * USD, 0, 0, 7 * USD)

    def test_releasing_an_unknown_hold_is_refused(self, run: TxRunner, ledger: Ledger) -> None:
        with pytest.raises(HoldNotFound):
            run(ledger.release_hold, hold_key="nope")


class TestExpiry:
    def test_a_hold_expires_only_once_its_ttl_and_grace_have_passed(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)

        clock.advance(TTL_S + GRACE_S - 1)
        assert run(ledger.expire_holds) == 0
        assert balances(run, ledger) == (10 * USD, 4 * USD, 0, 6 * USD)

        clock.advance(1)
        assert run(ledger.expire_holds) == 1
        assert hold_row(run, "h") == ("expired", None, None)
        assert balances(run, ledger) == (10 * USD, 0, 0, 10 * USD)
        assert run(ledger.expire_holds) == 0

    def test_the_sweeper_expires_only_the_holds_that_are_due(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, USD, "short", ttl_seconds=60)
        hold(run, ledger, USD, "long")

        clock.advance(60 + GRACE_S)

        assert run(ledger.expire_holds) == 1
        assert hold_row(run, "short")[0] == "expired"
        assert hold_row(run, "long")[0] == "pending"
        run(ledger.release_hold, hold_key="long")

    def test_a_settlement_after_expiry_is_refused_and_the_balance_stays_restored(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        """T23: crash with an open hold; the sweeper expires it; a late settle is refused."""
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        clock.advance(TTL_S + GRACE_S)
        run(ledger.expire_holds)
        before = snapshot(run)

        with pytest.raises(HoldNotPending, match="already expired") as refused:
            run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)

        assert refused.value.hold_status == "expired"
        assert snapshot(run) == before
        assert balances(run, ledger) == (10 * USD, 0, 0, 10 * USD)

    def test_a_release_after_expiry_is_refused(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        clock.advance(TTL_S + GRACE_S)
        run(ledger.expire_holds)

        with pytest.raises(HoldNotPending, match="already expired"):
            run(ledger.release_hold, hold_key="h")

    def test_a_hold_settled_before_the_sweep_is_not_expired(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        """T11, sequentially: whichever of settle and sweep comes first wins, once."""
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        clock.advance(TTL_S + GRACE_S)
        run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)

        assert run(ledger.expire_holds) == 0
        assert hold_row(run, "h") == ("settled", 3 * USD, 0)
        assert balances(run, ledger) == (7 * USD, 0, 0, 7 * USD)


class TestSettlementEntries:
    def test_a_settlement_to_an_unknown_revenue_account_is_refused_and_the_hold_stays_pending(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)
        before = snapshot(run)

        with pytest.raises(UnknownAccount, match="revenue:nope"):
            run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD, revenue="revenue:nope")

        assert snapshot(run) == before
        run(ledger.release_hold, hold_key="h")

    def test_a_callers_idempotency_key_never_blocks_a_settlement(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        """Caller keys and the keys the ledger derives for its own entries (``settle:<hold>``,
        ``expiry:lot:…``) share one unique index: a caller key must not be able to take one."""
        try:
            run(
                ledger.credit,
                user_id=1,
                bucket="credit",
                amount_nanos=10 * USD,
                kind="topup",
                source="clearing:sandbox",
                idempotency_key="settle:h",
            )
        except BadRequest:
            pass  # refusing reserved keys is one fix; the settlement below must work either way
        top_up(run, ledger, 10 * USD)
        hold(run, ledger, 4 * USD)

        settled = run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)

        assert settled.charged_nanos == 3 * USD
        assert hold_row(run, "h") == ("settled", 3 * USD, 0)
