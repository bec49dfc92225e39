"""The reconciliation statement: opening + Σ movements by kind = closing, for a generated history
of top-ups, refunds and reversals beyond the balance (debt), redemptions and grants (promo lots
that expire), adjustments both ways, usage (holds settled) and expiries, over periods whose
boundaries fall exactly on entries; every movement equals the sum of the ledger export's rows of
that kind — and it all holds while requests are billed concurrently."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import CURRENCIES
from tests.exports.conftest import nanos
from tests.fixtures import databases
from tests.fixtures.factories import Factory

from tallygate.db.engine import Database
from tallygate.exports import service
from tallygate.exports.queries import Filters, ledger_rows
from tallygate.exports.statement import statement
from tallygate.kit.clock import FrozenClock
from tallygate.ledger import Ledger
from tallygate.ledger.errors import AccountOwes, InsufficientBalance

UNIT = 1_000_000_000
SECOND = 1_000_000
BUCKETS = ("credit", "routed")

amounts = st.integers(min_value=1, max_value=5 * UNIT)
ops = st.one_of(
    st.tuples(st.just("topup"), st.sampled_from(BUCKETS), amounts),
    st.tuples(st.just("refund"), st.sampled_from(BUCKETS), amounts),
    st.tuples(st.just("reversal"), st.sampled_from(BUCKETS), amounts),
    st.tuples(st.just("redeem"), st.sampled_from(BUCKETS), amounts, st.integers(1, 50)),
    st.tuples(st.just("grant"), st.sampled_from(BUCKETS), amounts, st.integers(1, 50)),
    st.tuples(st.just("adjust_credit"), st.sampled_from(BUCKETS), amounts),
    st.tuples(st.just("adjust_debit"), st.sampled_from(BUCKETS), amounts),
    st.tuples(st.just("usage"), st.sampled_from(BUCKETS), amounts, st.integers(0, 100)),
    st.tuples(st.just("expire"), st.integers(0, 60)),
)
# Each step waits 0..3 s on the frozen clock: 0 puts several entries at the same instant.
histories = st.lists(st.tuples(ops, st.integers(0, 3)), min_size=1, max_size=24)


@dataclass
class Fresh:
    db: Database
    ledger: Ledger
    clock: FrozenClock
    user_id: int
    other_id: int

    def tx(self, fn: Any, **kwargs: Any) -> Any:
        with self.db.begin() as conn:
            return fn(self.ledger.tx(conn), **kwargs)


def fresh(db: Database) -> Fresh:
    """An emptied database, a new ledger (no cached account ids) and two users."""
    databases.empty(db)
    clock = FrozenClock()
    ledger = Ledger(CURRENCIES, clock=clock, hold_ttl_seconds=600, hold_grace_seconds=60)
    with db.begin() as conn:
        ledger.bootstrap(ledger.tx(conn))
    make = Factory(db, ledger)
    return Fresh(db, ledger, clock, make.user().id, make.user().id)


def apply(w: Fresh, op: tuple[Any, ...], user_id: int) -> None:
    name, key, led = op[0], uuid.uuid4().hex, w.ledger
    if name == "expire":
        w.clock.advance(op[1])
        w.tx(led.expire_lots)
        return
    bucket, amount = op[1], op[2]
    common = {"user_id": user_id, "bucket": bucket, "amount_nanos": amount, "idempotency_key": key}
    if name == "topup":
        w.tx(led.credit, kind="topup", source="clearing:sandbox", cause_type="order", **common)
    elif name in ("refund", "reversal"):
        w.tx(led.reverse, kind=name, destination="clearing:sandbox", cause_type=name, **common)
    elif name in ("redeem", "grant"):
        w.tx(
            led.credit,
            kind=name,
            source="promo:redeem" if name == "redeem" else "promo:starter",
            lot_kind="promo",
            lot_expires_at=led.now_us() + op[3] * SECOND,
            cause_type="code",
            **common,
        )
    elif name == "adjust_credit":
        w.tx(led.credit, kind="adjustment", source="adjust:admin", lot_kind="adjustment", **common)
    elif name == "adjust_debit":
        try:
            w.tx(led.debit, kind="adjustment", destination="adjust:admin", **common)
        except (InsufficientBalance, AccountOwes):
            pass
    elif name == "usage":
        try:
            w.tx(
                led.place_hold,
                user_id=user_id,
                bucket=bucket,
                amount_nanos=amount,
                hold_key=key,
            )
        except (InsufficientBalance, AccountOwes):
            return
        w.tx(led.settle_hold, hold_key=key, actual_nanos=amount * op[3] // 100)


def export_rows(db: Database, **filters: Any) -> list[dict[str, Any]]:
    with db.snapshot() as conn:
        return list(ledger_rows(conn, Filters(**filters)))


def check_period(w: Fresh, bucket: str, since: int | None, until: int | None) -> dict[str, Any]:
    with w.db.snapshot() as conn:
        st_ = statement(conn, user_id=w.user_id, bucket=bucket, since_us=since, until_us=until)
        rows = list(
            ledger_rows(
                conn, Filters(since_us=since, until_us=until, user_id=w.user_id, bucket=bucket)
            )
        )
    assert st_.balanced
    assert st_.opening_nanos + sum(st_.movements.values()) == st_.closing_nanos
    sums: dict[str, dict[str, int]] = {"bucket": defaultdict(int), "debt": defaultdict(int)}
    for row in rows:
        assert row["user_id"] == w.user_id and row["bucket"] == bucket
        assert since is None or row["created_at"] >= since
        assert until is None or row["created_at"] < until
        sums[row["account"]][row["kind"]] += row["amount"]
    assert st_.movements == {k: v for k, v in sums["bucket"].items()}
    assert st_.debt_movements == {k: v for k, v in sums["debt"].items()}
    # the rows' running balances agree with the statement's ends
    bucket_rows = [r for r in rows if r["account"] == "bucket"]
    if bucket_rows:
        assert bucket_rows[-1]["balance_after"] == st_.closing_nanos
        first = bucket_rows[0]
        assert first["balance_after"] - first["amount"] == st_.opening_nanos
    return st_.as_dict()


@settings(max_examples=25)
@given(history=histories, cuts=st.tuples(st.integers(0, 30), st.integers(0, 30)))
def test_statement_balances_over_a_generated_history_with_entries_on_the_boundaries(
    db: Database, history: list[tuple[tuple[Any, ...], int]], cuts: tuple[int, int]
) -> None:
    w = fresh(db)
    for i, (op, wait) in enumerate(history):
        w.clock.advance(wait)
        apply(w, op, w.user_id)
        if i % 5 == 0:  # the other user's traffic, never on this user's statement
            apply(w, ("topup", "credit", 7 * UNIT), w.other_id)
    rows = export_rows(db, user_id=w.user_id)
    # Period boundaries exactly on entries' times (or the history's start when there are none).
    times = sorted({r["created_at"] for r in rows}) or [w.ledger.now_us()]
    since, until = sorted((times[cuts[0] % len(times)], times[cuts[1] % len(times)]))
    for bucket in BUCKETS:
        with db.begin() as conn:
            now = w.ledger.balance(w.ledger.tx(conn), w.user_id, bucket)
        whole = check_period(w, bucket, None, None)
        assert whole["opening_balance"]["nanos"] == 0
        assert whole["closing_balance"]["nanos"] == now.balance_nanos
        assert whole["debt"]["closing"]["nanos"] == now.debt_nanos
        before = check_period(w, bucket, None, since)
        during = check_period(w, bucket, since, until)
        after = check_period(w, bucket, until, None)
        # the periods tile: each closing is the next opening, debt too
        assert before["closing_balance"] == during["opening_balance"]
        assert during["closing_balance"] == after["opening_balance"]
        assert before["debt"]["closing"] == during["debt"]["opening"]
        assert during["debt"]["closing"] == after["debt"]["opening"]
        # an entry exactly at `since` is in [since, until), not before; one at `until` is after
        at_since = [r for r in rows if r["created_at"] == since and r["bucket"] == bucket]
        in_during = export_rows(
            db, user_id=w.user_id, bucket=bucket, since_us=since, until_us=until
        )
        in_before = export_rows(db, user_id=w.user_id, bucket=bucket, until_us=since)
        in_after = export_rows(db, user_id=w.user_id, bucket=bucket, since_us=until)
        ids = lambda rs: {r["posting_id"] for r in rs}  # noqa: E731
        if since != until:
            assert ids(at_since) <= ids(in_during)
        assert not ids(at_since) & ids(in_before)
        at_until = [r for r in rows if r["created_at"] == until and r["bucket"] == bucket]
        assert ids(at_until) <= ids(in_after)
        everything = ids(in_before) | ids(in_during) | ids(in_after)
        assert len(everything) == len(in_before) + len(in_during) + len(in_after)
        assert everything == ids([r for r in rows if r["bucket"] == bucket])


def test_statement_with_rows_agrees_while_requests_are_billed_concurrently(db: Database) -> None:
    w = fresh(db)
    for bucket in BUCKETS:
        w.tx(
            w.ledger.credit,
            user_id=w.user_id,
            bucket=bucket,
            amount_nanos=1_000 * UNIT,
            kind="topup",
            source="clearing:sandbox",
            idempotency_key=f"start:{bucket}",
        )
    w.clock.advance(1)
    since = w.ledger.now_us()
    stop = threading.Event()
    errors: list[BaseException] = []
    billed = [0]

    def bill(worker: int) -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                key = f"req:{worker}:{n}"
                bucket = BUCKETS[n % 2]
                w.tx(
                    w.ledger.place_hold,
                    user_id=w.user_id,
                    bucket=bucket,
                    amount_nanos=1_000_003,
                    hold_key=key,
                )
                w.tx(
                    w.ledger.settle_hold,
                    hold_key=key,
                    actual_nanos=n * 7_919 % 1_000_003,
                    cause_type="request",
                    cause_id=key,
                )
                billed[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bill, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    checked = 0
    try:
        while checked < 12 or billed[0] < 30:
            for bucket in BUCKETS:
                for period in ((None, None), (since, None)):
                    result = service.statement_with_rows(
                        db,
                        user_id=w.user_id,
                        bucket=bucket,
                        since_us=period[0],
                        until_us=period[1],
                        rows=True,
                    )
                    rows = [r for r in result["rows"] if r["account"] == "bucket"]
                    opening = result["opening_balance"]["nanos"]
                    closing = result["closing_balance"]["nanos"]
                    assert opening + sum(nanos(r["amount"]) for r in rows) == closing
                    assert result["balanced"] is True
                    by_kind: dict[str, int] = defaultdict(int)
                    for r in rows:
                        by_kind[r["kind"]] += nanos(r["amount"])
                    assert {m["kind"]: m["nanos"] for m in result["movements"]} == by_kind
                    if rows:
                        assert nanos(rows[-1]["balance_after"]) == closing
                    checked += 1
            assert not errors, errors
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert billed[0] >= 30


def test_a_fixed_history_shows_every_kind_and_the_debt_beside_it(db: Database) -> None:
    w = fresh(db)
    history: list[tuple[Any, ...]] = [
        ("topup", "credit", 10 * UNIT),
        ("grant", "credit", 3 * UNIT, 5),
        ("usage", "credit", 4 * UNIT, 50),
        ("redeem", "credit", 2 * UNIT, 100),
        ("adjust_credit", "credit", UNIT),
        ("adjust_debit", "credit", UNIT // 2),
        ("expire", 10),  # the grant's unspent remainder expires
        ("refund", "credit", 20 * UNIT),  # beyond the balance: the rest is debt
        ("topup", "credit", 5 * UNIT),  # repays debt first
        ("reversal", "credit", UNIT),
    ]
    stamps = []
    for op in history:
        w.clock.advance(1)
        stamps.append(w.ledger.now_us())
        apply(w, op, w.user_id)
    whole = check_period(w, "credit", None, None)
    assert {m["kind"] for m in whole["movements"]} == {
        "topup",
        "grant",
        "usage",
        "redeem",
        "adjustment",
        "expiry",
        "refund",
    }
    moves = {m["kind"]: m["nanos"] for m in whole["movements"]}
    assert moves["usage"] == -2 * UNIT and moves["adjustment"] == UNIT // 2
    assert moves["expiry"] < 0
    debt = {m["kind"]: m["nanos"] for m in whole["debt"]["movements"]}
    # the bucket is empty by then: the reversal is owed in full
    assert debt["refund"] > 0 and debt["topup"] == -5 * UNIT and debt["reversal"] == UNIT
    # the refund's entry lies exactly on the boundary: in [since, …), not in (…, since)
    since = stamps[7]
    before, after = check_period(w, "credit", None, since), check_period(w, "credit", since, None)
    assert "refund" not in {m["kind"] for m in before["movements"]}
    assert "refund" in {m["kind"] for m in after["movements"]}
    assert before["closing_balance"] == after["opening_balance"]
    assert after["debt"]["opening"]["nanos"] == 0 < after["debt"]["closing"]["nanos"]
