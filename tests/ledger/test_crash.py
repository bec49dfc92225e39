"""Crash tests (research/ledger.md §6.3 T19, T23): a separate OS process is SIGKILLed after it
wrote an entry's postings and before COMMIT, on SQLite and PostgreSQL.

The child runs with ``TALLYGATE_FAULT=after_postings_before_commit``: it first places a hold in
its own committed transaction, then starts a credit (or the settle of that hold) whose
transaction pauses at the fault point after printing the marker. The test waits for the marker
on the child's stderr and kills it exactly there. PostgreSQL rolls the dead client's transaction
back; SQLite discards the WAL frames of a transaction that never wrote its commit frame. Either
way nothing of it may remain, and the committed hold must still be expired by the sweeper."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from sqlalchemy import text

from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock, to_epoch_us
from tallygate.ledger import HoldNotPending, Ledger
from tallygate.ledger.faults import MARKER
from tallygate.ledger.reconcile import reconcile
from tests.ledger.workers import HOLD_GRACE_SECONDS, HOLD_TTL_SECONDS, workers

GRACE_US = HOLD_GRACE_SECONDS * 1_000_000
POINT = "after_postings_before_commit"


def now_us(clock: FrozenClock) -> int:
    return to_epoch_us(clock.now())


def counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return {
            t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one())
            for t in ("entries", "postings", "lots", "holds", "audit_events")
        }


def key_exists(db: Database, key: str) -> bool:
    with db.read() as conn:
        return (
            conn.execute(
                text("SELECT 1 FROM entries WHERE idempotency_key = :k"), {"k": key}
            ).first()
            is not None
        )


def hold_status(db: Database, key: str) -> str:
    with db.read() as conn:
        return str(
            conn.execute(
                text("SELECT status FROM holds WHERE hold_key = :k"), {"k": key}
            ).scalar_one()
        )


@pytest.mark.parametrize("then", ["credit", "settle"])
def test_kill_between_postings_and_commit_leaves_nothing_and_the_hold_expires(
    db: Database, ledger: Ledger, clock: FrozenClock, run: Any, then: str
) -> None:
    run(ledger.open_user, 1)
    run(
        ledger.credit,
        user_id=1,
        bucket="credit",
        amount_nanos=1_000,
        kind="topup",
        source="clearing:sandbox",
        idempotency_key="seed",
    )
    killed_key = "topup:crash" if then == "credit" else "settle:hold:crash"
    with workers(1, db.url, now_us(clock), users=[1], fault=POINT) as (child,):
        child.send(
            {
                "op": "crash",
                "user": 1,
                "bucket": "credit",
                "hold_key": "hold:crash",
                "hold_amount": 100,
                "then": then,
                "amount": 500 if then == "credit" else 60,
                "key": "topup:crash",
            }
        )
        # (a) the hold's own transaction committed before the fatal one started.
        assert child.reply() == {"hold_committed": "hold:crash"}
        line = child.wait_stderr(MARKER)
        assert line.strip() == f"{MARKER} {POINT}"
        # Paused with postings written but not committed: nobody else sees them.
        committed = counts(db)
        assert not key_exists(db, killed_key)
        assert hold_status(db, "hold:crash") == "pending"
        assert child.kill() == -signal.SIGKILL
    assert child.proc.returncode == -signal.SIGKILL

    # Nothing of the killed transaction remains: no entry, posting, lot, nor status change.
    assert counts(db) == committed
    assert committed["entries"] == 1 and committed["postings"] == 2 and committed["lots"] == 1
    assert committed["holds"] == 1
    assert not key_exists(db, killed_key)
    assert hold_status(db, "hold:crash") == "pending"
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos, bal.debt_nanos) == (1_000, 100, 0)
    report = run(reconcile, now_us=now_us(clock), grace_us=GRACE_US)
    assert report.ok, "\n".join(report.lines())

    # Past TTL + grace, the committed hold is overdue until the sweeper (another process in
    # production; this one here) expires it; then everything is available again.
    clock.advance(HOLD_TTL_SECONDS + HOLD_GRACE_SECONDS + 1)
    report = run(reconcile, now_us=now_us(clock), grace_us=GRACE_US)
    assert report.problems == ["hold hold:crash is still pending past its TTL + grace"]
    assert run(ledger.expire_holds) == 1
    assert hold_status(db, "hold:crash") == "expired"
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos, bal.available_nanos) == (1_000, 0, 1_000)
    report = run(reconcile, now_us=now_us(clock), grace_us=GRACE_US)
    assert report.ok, "\n".join(report.lines())

    # T23: a late settle of the crashed request is refused as expired, and charges nothing.
    with pytest.raises(HoldNotPending) as late:
        run(ledger.settle_hold, hold_key="hold:crash", actual_nanos=60)
    assert late.value.hold_status == "expired"
    # The killed credit's idempotency key was never claimed: a retry posts it afresh, once.
    retried = run(
        ledger.credit,
        user_id=1,
        bucket="credit",
        amount_nanos=500,
        kind="topup",
        source="clearing:sandbox",
        idempotency_key="topup:crash",
    )
    assert retried.replayed is False
    assert run(ledger.balance, 1, "credit").balance_nanos == 1_500
    report = run(reconcile, now_us=now_us(clock), grace_us=GRACE_US)
    assert report.ok, "\n".join(report.lines())
