"""Tamper detection (research/ledger.md §6.3 T24, I4, I5) on SQLite and PostgreSQL.

A ledger with some of everything is built through the Ledger API; then raw SQL edits the
database behind its back, as an attacker or a buggy script with database access would, and
``reconcile`` must name exactly what no longer adds up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from tallygate.audit.service import event_hash, record
from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock, to_epoch_us
from tallygate.ledger import Ledger
from tallygate.ledger.reconcile import Report, reconcile

GRACE_US = 60 * 1_000_000


@dataclass
class Book:
    topup_entry: int
    topup_lot: int
    credit_balance: int
    held: int


def now_us(clock: FrozenClock) -> int:
    return to_epoch_us(clock.now())


def check(run: Any, clock: FrozenClock, at_us: int | None = None) -> Report:
    return run(reconcile, now_us=now_us(clock) if at_us is None else at_us, grace_us=GRACE_US)


def sql(db: Database, statement: str, **params: Any) -> list[Any]:
    with db.begin() as conn:
        result = conn.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


def activity(ledger: Ledger, run: Any, clock: FrozenClock) -> Book:
    """Top-ups on both buckets, a settled hold, a released hold, a direct debit, a reversal, a
    pending hold, and three audit events."""
    for u in (1, 2):
        run(ledger.open_user, u)
    topup = run(
        ledger.credit,
        user_id=1,
        bucket="credit",
        amount_nanos=1_000,
        kind="topup",
        source="clearing:sandbox",
        idempotency_key="t1",
    )
    run(
        ledger.credit,
        user_id=2,
        bucket="routed",
        amount_nanos=700,
        kind="topup",
        source="clearing:sandbox",
        idempotency_key="t2",
    )
    run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=300, hold_key="h1")
    run(ledger.settle_hold, hold_key="h1", actual_nanos=120)
    run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=50, hold_key="h2")
    run(ledger.release_hold, hold_key="h2")
    run(
        ledger.debit,
        user_id=1,
        bucket="credit",
        amount_nanos=30,
        kind="adjustment",
        destination="adjust:admin",
        idempotency_key="d1",
    )
    run(
        ledger.reverse,
        user_id=2,
        bucket="routed",
        amount_nanos=200,
        kind="refund",
        destination="clearing:sandbox",
        idempotency_key="r1",
    )
    run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=40, hold_key="h3")
    for i in range(1, 4):
        clock.advance(1)
        run(
            record,
            now_us=now_us(clock),
            actor="operator:7",
            source="operator",
            action=f"config.change.{i}",
            target="route:gpt-4o-mini",
            before={"weight": i},
            after={"weight": i + 1},
            reason=f"change {i}",
        )
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos) == (1_000 - 120 - 30, 40)
    return Book(topup.entry_id, topup.extra["lot_id"], bal.balance_nanos, bal.held_nanos)


@pytest.fixture
def book(ledger: Ledger, run: Any, clock: FrozenClock) -> Book:
    built = activity(ledger, run, clock)
    report = check(run, clock)
    assert report.ok, "\n".join(report.lines())
    return built


def problems(report: Report) -> set[str]:
    assert not report.ok
    lines = report.lines()
    assert lines[0].startswith(f"reconcile: {len(report.problems)} problem(s) found (")
    assert lines[1:] == [f"  - {p}" for p in report.problems]
    return set(report.problems)


# ---- a clean ledger -------------------------------------------------------------------------------


def test_clean_ledger_with_activity_reconciles(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    report = check(run, clock)
    assert report.ok and report.problems == []
    assert report.counts == {
        "entries": 5,  # t1, t2, settle:h1, d1, r1
        "postings": 10,
        "user accounts": 8,
        "lots": 2,
        "holds": 3,
    }
    assert report.lines()[0].startswith("reconcile: OK (5 entries, 10 postings")
    assert report.lines()[0].endswith("every balance equals its postings")


# ---- ledger tampering -----------------------------------------------------------------------------


def test_edited_posting_amount_is_an_unbalanced_entry_and_a_balance_mismatch(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    sql(
        db,
        "UPDATE postings SET amount_nanos = amount_nanos + 5 WHERE entry_id = :e AND lot_id = :lot",
        e=book.topup_entry,
        lot=book.topup_lot,
    )
    (remaining,) = sql(db, "SELECT remaining_nanos FROM lots WHERE id = :l", l=book.topup_lot)[0]
    assert problems(check(run, clock)) == {
        f"entry {book.topup_entry} does not balance in USD: postings sum to 5",
        f"account user:1:credit: cached balance {book.credit_balance} ≠ Σ postings "
        f"{book.credit_balance + 5}",
        f"lot {book.topup_lot}: remaining {remaining} ≠ Σ postings {remaining + 5}",
    }


def test_edited_platform_posting_is_an_unbalanced_entry(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    sql(
        db,
        "UPDATE postings SET amount_nanos = -999 WHERE entry_id = :e AND lot_id IS NULL",
        e=book.topup_entry,
    )
    assert problems(check(run, clock)) == {
        f"entry {book.topup_entry} does not balance in USD: postings sum to 1",
    }


def test_edited_cached_balance_is_reported(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    sql(db, "UPDATE accounts SET balance_nanos = balance_nanos + 7 WHERE code = 'user:1:credit'")
    assert problems(check(run, clock)) == {
        f"account user:1:credit: cached balance {book.credit_balance + 7} ≠ Σ postings "
        f"{book.credit_balance}",
        f"account user:1:credit: balance {book.credit_balance + 7} ≠ Σ lot remainders "
        f"{book.credit_balance}",
    }


def test_edited_cached_hold_total_is_reported(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    sql(db, "UPDATE accounts SET held_nanos = 0 WHERE code = 'user:1:credit'")
    assert problems(check(run, clock)) == {
        f"account user:1:credit: held 0 ≠ Σ pending holds {book.held}",
    }


def test_edited_debt_is_reported(db: Database, book: Book, run: Any, clock: FrozenClock) -> None:
    (debt,) = sql(db, "SELECT balance_nanos FROM accounts WHERE code = 'user:2:routed:debt'")[0]
    assert debt == 0  # the reversal of 200 was covered by the 700 top-up
    sql(db, "UPDATE accounts SET balance_nanos = 3 WHERE code = 'user:2:routed:debt'")
    assert problems(check(run, clock)) == {
        "account user:2:routed:debt: cached balance 3 ≠ Σ postings 0",
    }


# ---- audit chain tampering ------------------------------------------------------------------------


def test_deleting_the_last_audit_event_is_reported(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    sql(db, "DELETE FROM audit_events WHERE seq = 3")
    assert problems(check(run, clock)) == {
        "audit chain head counts 3 events but 2 are stored "
        "(events were deleted or inserted outside the log)",
    }


def test_deleting_a_middle_audit_event_is_reported(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    sql(db, "DELETE FROM audit_events WHERE seq = 2")
    assert problems(check(run, clock)) == {
        "audit event #2 is missing (found #3 in its place)",
        "audit chain head counts 3 events but 2 are stored "
        "(events were deleted or inserted outside the log)",
    }


def test_swapping_two_audit_events_is_reported(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    columns = (
        "created_at, actor, source, action, target, before_json, after_json, reason, "
        "prev_hash, hash"
    )
    rows = {
        r[0]: r[1:] for r in sql(db, f"SELECT seq, {columns} FROM audit_events WHERE seq IN (1, 2)")
    }
    names = [c.strip() for c in columns.split(",")]
    assignments = ", ".join(f"{n} = :{n}" for n in names)
    for seq, other in ((1, 2), (2, 1)):
        sql(
            db,
            f"UPDATE audit_events SET {assignments} WHERE seq = :seq",
            seq=seq,
            **dict(zip(names, rows[other], strict=True)),
        )
    found = problems(check(run, clock))
    # Both swapped positions are named, as broken links and as altered content.
    assert {
        "audit event #1 does not link to the previous event",
        "audit event #1 was altered: its hash does not match its content",
        "audit event #2 does not link to the previous event",
        "audit event #2 was altered: its hash does not match its content",
    } <= found
    assert found <= {
        "audit event #1 does not link to the previous event",
        "audit event #1 was altered: its hash does not match its content",
        "audit event #2 does not link to the previous event",
        "audit event #2 was altered: its hash does not match its content",
        "audit event #3 does not link to the previous event",
        "audit event #3 was altered: its hash does not match its content",
    }


def test_edited_audit_reason_is_reported(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    sql(db, "UPDATE audit_events SET reason = 'nothing to see here' WHERE seq = 2")
    assert problems(check(run, clock)) == {
        "audit event #2 was altered: its hash does not match its content",
    }


def test_edited_last_audit_event_with_a_recomputed_hash_is_caught_by_the_head(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    """An attacker who knows the hash recipe rewrites the last event and its hash consistently;
    only the chain head (updated in every append's transaction) still tells."""
    row = sql(
        db,
        "SELECT prev_hash, seq, created_at, actor, source, action, target, before_json, "
        "after_json FROM audit_events WHERE seq = 3",
    )[0]
    forged = event_hash(*row, "a different reason")
    sql(
        db,
        "UPDATE audit_events SET reason = 'a different reason', hash = :h WHERE seq = 3",
        h=forged,
    )
    assert problems(check(run, clock)) == {"audit chain head hash does not match the last event"}


def test_edited_middle_audit_event_with_a_recomputed_hash_breaks_the_next_link(
    db: Database, book: Book, run: Any, clock: FrozenClock
) -> None:
    row = sql(
        db,
        "SELECT prev_hash, seq, created_at, actor, source, action, target, before_json, "
        "after_json FROM audit_events WHERE seq = 2",
    )[0]
    forged = event_hash(*row, "a different reason")
    sql(
        db,
        "UPDATE audit_events SET reason = 'a different reason', hash = :h WHERE seq = 2",
        h=forged,
    )
    found = problems(check(run, clock))
    assert "audit event #3 does not link to the previous event" in found
    assert "audit event #2 was altered: its hash does not match its content" not in found


# ---- overdue holds --------------------------------------------------------------------------------


def test_pending_hold_past_ttl_and_grace_is_reported_until_swept(
    db: Database, book: Book, ledger: Ledger, run: Any, clock: FrozenClock
) -> None:
    (expires_at,) = sql(db, "SELECT expires_at FROM holds WHERE hold_key = 'h3'")[0]
    # At exactly TTL + grace the sweeper may take it, but it is not overdue yet.
    assert check(run, clock, at_us=expires_at + GRACE_US).ok
    late = expires_at + GRACE_US + 1
    assert problems(check(run, clock, at_us=late)) == {
        "hold h3 is still pending past its TTL + grace"
    }
    clock.set(clock.now().fromtimestamp(late / 1_000_000, tz=clock.now().tzinfo))
    assert to_epoch_us(clock.now()) == late
    assert run(ledger.expire_holds) == 1
    report = check(run, clock, at_us=late)
    assert report.ok, "\n".join(report.lines())
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos) == (book.credit_balance, 0)
