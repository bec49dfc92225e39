"""Lots: the order value is drawn in, expiry of what is not earmarked, and each lot's history
(DESIGN.md "lot"; research/ledger.md §6.2.5, I12). Every scenario runs on SQLite and PostgreSQL
and ends with a clean ``reconcile``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tallygate.kit.clock import FrozenClock
from tallygate.ledger import Ledger
from tallygate.ledger.reconcile import reconcile
from tests.conftest import TxRunner

USD = 1_000_000_000
HOUR_S = 3600
HOUR_US = HOUR_S * 1_000_000


def grant(
    run: TxRunner,
    ledger: Ledger,
    amount: int,
    *,
    kind: str = "paid",
    priority: int = 100,
    expires_in_s: int | None = None,
    user_id: int = 1,
) -> int:
    """Credit user 1's credit bucket with one lot; returns the lot id."""
    entry = run(
        ledger.credit,
        user_id=user_id,
        bucket="credit",
        amount_nanos=amount,
        kind="topup" if kind == "paid" else "grant",
        source="clearing:sandbox" if kind == "paid" else "promo:starter",
        idempotency_key=uuid.uuid4().hex,
        lot_kind=kind,
        lot_priority=priority,
        lot_expires_at=None if expires_in_s is None else ledger.now_us() + expires_in_s * 1_000_000,
    )
    return int(entry.extra["lot_id"])


def spend(run: TxRunner, ledger: Ledger, amount: int, key: str | None = None) -> int:
    """Debit user 1's credit bucket; returns the entry id."""
    entry = run(
        ledger.debit,
        user_id=1,
        bucket="credit",
        amount_nanos=amount,
        kind="usage",
        destination="revenue:usage",
        idempotency_key=key or uuid.uuid4().hex,
    )
    return int(entry.entry_id)


def drawn(run: TxRunner, entry_id: int) -> list[tuple[int, int]]:
    """(lot id, nano-units taken) for each lot an entry drew from, in drawing order."""
    rows = run(
        lambda tx: tx.all(
            "SELECT lot_id, amount_nanos FROM postings WHERE entry_id = ? AND lot_id IS NOT NULL "
            "ORDER BY id",
            (entry_id,),
        )
    )
    return [(int(lot), -int(amount)) for lot, amount in rows]


def lot_state(run: TxRunner, lot_id: int) -> tuple[int, int]:
    """(remaining, earmarked) of a lot."""
    row = run(
        lambda tx: tx.one(
            "SELECT remaining_nanos, earmarked_nanos FROM lots WHERE id = ?", (lot_id,)
        )
    )
    return int(row[0]), int(row[1])


def balances(run: TxRunner, ledger: Ledger) -> tuple[int, int]:
    """(balance, held) of user 1's credit bucket."""
    b = run(ledger.balance, 1, "credit")
    return b.balance_nanos, b.held_nanos


@pytest.fixture(autouse=True)
def users(ledger: Ledger, run: TxRunner) -> Iterator[None]:
    """Users 1 and 2 have accounts; every scenario must leave the ledger reconciled."""
    run(ledger.open_user, 1)
    run(ledger.open_user, 2)
    yield
    report = run(reconcile, now_us=ledger.now_us(), grace_us=ledger.hold_grace_us)
    assert report.ok, report.problems


class TestDrawOrder:
    def test_a_lower_priority_number_is_drawn_first(self, run: TxRunner, ledger: Ledger) -> None:
        normal = grant(run, ledger, 5 * USD, priority=100)
        first = grant(run, ledger, 5 * USD, priority=5)

        entry = spend(run, ledger, 7 * USD)

        assert drawn(run, entry) == [(first, 5 * USD), (normal, 2 * USD)]

    def test_at_equal_priority_the_soonest_expiry_is_drawn_first_and_no_expiry_last(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        never = grant(run, ledger, USD)
        later = grant(run, ledger, USD, expires_in_s=2 * HOUR_S)
        sooner = grant(run, ledger, USD, expires_in_s=HOUR_S)

        entry = spend(run, ledger, 3 * USD)

        assert drawn(run, entry) == [(sooner, USD), (later, USD), (never, USD)]

    def test_at_equal_priority_and_expiry_promotional_credit_is_drawn_before_paid(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        paid = grant(run, ledger, USD, kind="paid")
        adjustment = grant(run, ledger, USD, kind="adjustment")
        promo = grant(run, ledger, USD, kind="promo")

        entry = spend(run, ledger, 3 * USD)

        assert drawn(run, entry) == [(promo, USD), (paid, USD), (adjustment, USD)]

    def test_otherwise_the_oldest_lot_is_drawn_first(self, run: TxRunner, ledger: Ledger) -> None:
        oldest = grant(run, ledger, USD, kind="promo")
        middle = grant(run, ledger, USD, kind="promo")
        newest = grant(run, ledger, USD, kind="promo")

        entry = spend(run, ledger, 3 * USD)

        assert drawn(run, entry) == [(oldest, USD), (middle, USD), (newest, USD)]

    def test_priority_outranks_expiry_which_outranks_kind_which_outranks_age(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        paid_never = grant(run, ledger, USD)
        promo_never = grant(run, ledger, USD, kind="promo")
        paid_soon = grant(run, ledger, USD, expires_in_s=HOUR_S)
        promo_late = grant(run, ledger, USD, kind="promo", expires_in_s=2 * HOUR_S)
        paid_urgent = grant(run, ledger, USD, priority=1)
        promo_urgent_expiring = grant(run, ledger, USD, kind="promo", priority=1, expires_in_s=9)

        entry = spend(run, ledger, 6 * USD)

        assert [lot for lot, _ in drawn(run, entry)] == [
            promo_urgent_expiring,
            paid_urgent,
            paid_soon,
            promo_late,
            promo_never,
            paid_never,
        ]

    def test_a_debit_continues_where_the_previous_one_stopped(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        first = grant(run, ledger, 5 * USD, priority=1)
        second = grant(run, ledger, 5 * USD, priority=2)
        spend(run, ledger, 3 * USD)

        entry = spend(run, ledger, 4 * USD)

        assert drawn(run, entry) == [(first, 2 * USD), (second, 2 * USD)]
        assert lot_state(run, first) == (0, 0)
        assert lot_state(run, second) == (3 * USD, 0)

    def test_a_hold_earmarks_lots_in_draw_order_and_a_debit_skips_what_it_earmarked(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        first = grant(run, ledger, 5 * USD, priority=1)
        second = grant(run, ledger, 5 * USD, priority=2)
        third = grant(run, ledger, 5 * USD, priority=3)
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=7 * USD, hold_key="h")

        assert [lot_state(run, lot) for lot in (first, second, third)] == [
            (5 * USD, 5 * USD),
            (5 * USD, 2 * USD),
            (5 * USD, 0),
        ]
        entry = spend(run, ledger, 4 * USD)
        assert drawn(run, entry) == [(second, 3 * USD), (third, USD)]
        run(ledger.release_hold, hold_key="h")
        assert [lot_state(run, lot) for lot in (first, second, third)] == [
            (5 * USD, 0),
            (2 * USD, 0),
            (4 * USD, 0),
        ]

    def test_the_bucket_balance_is_the_sum_of_its_lot_remainders(
        self, run: TxRunner, ledger: Ledger
    ) -> None:
        lots = [grant(run, ledger, n * USD, priority=n) for n in (1, 2, 3)]
        spend(run, ledger, 4 * USD)

        remainders = [lot_state(run, lot)[0] for lot in lots]

        assert remainders == [0, 0, 2 * USD]
        assert balances(run, ledger) == (sum(remainders), 0)


class TestExpireLots:
    def test_an_expired_lot_leaves_by_an_expiry_entry_to_expired_lots(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        lot = grant(run, ledger, 10 * USD, kind="promo", expires_in_s=HOUR_S)
        spend(run, ledger, 3 * USD)
        clock.advance(HOUR_S)

        assert run(ledger.expire_lots) == 1

        rows = run(
            lambda tx: tx.all(
                "SELECT e.kind, e.cause_type, e.cause_id, a.code, p.amount_nanos, p.lot_id "
                "FROM entries e JOIN postings p ON p.entry_id = e.id "
                "JOIN accounts a ON a.id = p.account_id WHERE e.kind = 'expiry' ORDER BY p.id"
            )
        )
        assert [tuple(r) for r in rows] == [
            ("expiry", "lot", str(lot), "user:1:credit", -7 * USD, lot),
            ("expiry", "lot", str(lot), "expired:lots:credit", 7 * USD, None),
        ]
        assert lot_state(run, lot) == (0, 0)
        assert balances(run, ledger) == (0, 0)

    def test_a_lot_is_not_expired_before_its_expiry_time(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        lot = grant(run, ledger, 10 * USD, expires_in_s=HOUR_S)

        clock.advance(HOUR_S - 0.000001)
        assert run(ledger.expire_lots) == 0
        assert lot_state(run, lot) == (10 * USD, 0)

        clock.advance(0.000001)
        assert run(ledger.expire_lots) == 1
        assert lot_state(run, lot) == (0, 0)

    def test_only_lots_past_their_expiry_are_taken(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        expiring = grant(run, ledger, USD, expires_in_s=HOUR_S)
        later = grant(run, ledger, 2 * USD, expires_in_s=3 * HOUR_S)
        never = grant(run, ledger, 4 * USD)
        other_user = grant(run, ledger, 8 * USD, expires_in_s=HOUR_S, user_id=2)
        clock.advance(2 * HOUR_S)

        assert run(ledger.expire_lots) == 2

        assert [lot_state(run, lot)[0] for lot in (expiring, later, never, other_user)] == [
            0,
            2 * USD,
            4 * USD,
            0,
        ]
        assert balances(run, ledger) == (6 * USD, 0)

    def test_sweeping_again_writes_nothing(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        grant(run, ledger, USD, expires_in_s=HOUR_S)
        clock.advance(HOUR_S)
        run(ledger.expire_lots)

        assert run(ledger.expire_lots) == 0
        assert run(lambda tx: tx.one("SELECT COUNT(*) FROM entries WHERE kind = 'expiry'"))[0] == 1

    def test_a_fully_spent_lot_writes_no_expiry_entry(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        grant(run, ledger, USD, expires_in_s=HOUR_S)
        spend(run, ledger, USD)
        clock.advance(HOUR_S)

        assert run(ledger.expire_lots) == 0

    def test_a_hold_on_a_lot_that_expires_before_settlement_still_settles_from_it(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        """The earmarked part survives expiry: settlement draws from it, and only the rest is
        expired — before the settlement and, for what the settlement released, after it."""
        lot = grant(run, ledger, 10 * USD, kind="promo", expires_in_s=60)
        paid = grant(run, ledger, 10 * USD)
        run(
            ledger.place_hold,
            user_id=1,
            bucket="credit",
            amount_nanos=4 * USD,
            hold_key="h",
            ttl_seconds=600,
        )
        clock.advance(120)

        assert run(ledger.expire_lots) == 1
        assert lot_state(run, lot) == (4 * USD, 4 * USD)
        assert balances(run, ledger) == (14 * USD, 4 * USD)

        settled = run(ledger.settle_hold, hold_key="h", actual_nanos=3 * USD)

        assert drawn(run, settled.entry_id) == [(lot, 3 * USD)]
        assert lot_state(run, lot) == (USD, 0)
        assert run(ledger.expire_lots) == 1
        assert lot_state(run, lot) == (0, 0)
        assert lot_state(run, paid) == (10 * USD, 0)
        assert balances(run, ledger) == (10 * USD, 0)

    def test_a_released_hold_on_an_expired_lot_is_expired_by_the_next_sweep(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        lot = grant(run, ledger, 10 * USD, expires_in_s=60)
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=4 * USD, hold_key="h")
        clock.advance(60)
        run(ledger.expire_lots)

        run(ledger.release_hold, hold_key="h")

        assert lot_state(run, lot) == (4 * USD, 0)
        assert run(ledger.expire_lots) == 1
        assert balances(run, ledger) == (0, 0)

    def test_a_hold_expired_by_the_sweeper_frees_its_expired_lot_for_the_next_lot_sweep(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        lot = grant(run, ledger, 10 * USD, expires_in_s=60)
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=4 * USD, hold_key="h")
        clock.advance(600 + 60)

        assert run(ledger.expire_lots) == 1
        assert run(ledger.expire_holds) == 1
        assert run(ledger.expire_lots) == 1
        assert lot_state(run, lot) == (0, 0)
        assert balances(run, ledger) == (0, 0)


class TestLotHistory:
    def test_the_postings_on_a_lot_tell_which_entries_used_it(
        self, run: TxRunner, ledger: Ledger, clock: FrozenClock
    ) -> None:
        """Was this top-up used, and by which requests? Its postings answer exactly."""
        lot = grant(run, ledger, 10 * USD, expires_in_s=HOUR_S)
        grant(run, ledger, 10 * USD, user_id=2)
        spend(run, ledger, 2 * USD, key="req-1")
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=4 * USD, hold_key="req-2")
        run(ledger.settle_hold, hold_key="req-2", actual_nanos=3 * USD)
        run(
            ledger.reverse,
            user_id=1,
            bucket="credit",
            amount_nanos=USD,
            kind="refund",
            destination="clearing:stripe",
            idempotency_key="refund-1",
            lot_id=lot,
        )
        clock.advance(HOUR_S)
        run(ledger.expire_lots)

        history = run(
            lambda tx: tx.all(
                "SELECT e.kind, e.idempotency_key, e.cause_id, p.amount_nanos FROM postings p "
                "JOIN entries e ON e.id = p.entry_id WHERE p.lot_id = ? ORDER BY p.id",
                (lot,),
            )
        )

        rows = [(kind, cause or key, amount) for kind, key, cause, amount in history]
        assert rows[:4] == [
            ("topup", rows[0][1], 10 * USD),
            ("usage", "req-1", -2 * USD),
            ("usage", "req-2", -3 * USD),
            ("refund", "refund-1", -USD),
        ]
        assert rows[4][0::2] == ("expiry", -4 * USD)
        assert len(rows) == 5
        assert sum(amount for *_, amount in rows) == lot_state(run, lot)[0] == 0

    def test_a_lot_records_the_entry_that_opened_it(self, run: TxRunner, ledger: Ledger) -> None:
        entry = run(
            ledger.credit,
            user_id=1,
            bucket="credit",
            amount_nanos=USD,
            kind="redeem",
            source="promo:redeem",
            idempotency_key="code-1",
            lot_kind="promo",
        )

        source: Any = run(
            lambda tx: tx.one(
                "SELECT e.idempotency_key FROM lots l JOIN entries e ON e.id = l.source_entry_id "
                "WHERE l.id = ?",
                (entry.extra["lot_id"],),
            )
        )
        assert source[0] == "code-1"
