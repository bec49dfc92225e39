"""Concurrency, with SEPARATE OS PROCESSES on SQLite and PostgreSQL (research/ledger.md §6.3
T7–T11, T25).

Each child (tests/ledger/workers.py) opens its own database connection and Ledger, warms up,
reports ready and blocks reading its command line; the parent writes every command line back to
back once all are ready, so the children really overlap. Nothing retries: any deadlock or
serialization failure surfaces as an error in a child's reply and fails the test."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock, to_epoch_us
from tallygate.ledger import HoldNotPending, Ledger
from tallygate.ledger.reconcile import reconcile
from tests.ledger.workers import (
    HOLD_GRACE_SECONDS,
    HOLD_TTL_SECONDS,
    Worker,
    fire,
    workers,
)

GRACE_US = HOLD_GRACE_SECONDS * 1_000_000
PAST_TTL_AND_GRACE_US = (HOLD_TTL_SECONDS + HOLD_GRACE_SECONDS + 1) * 1_000_000


def now_us(clock: FrozenClock) -> int:
    return to_epoch_us(clock.now())


def assert_reconciles(run: Any, at_us: int) -> None:
    report = run(reconcile, now_us=at_us, grace_us=GRACE_US)
    assert report.ok, "\n".join(report.lines())


def scalar(db: Database, sql: str, **params: Any) -> Any:
    with db.read() as conn:
        return conn.execute(text(sql), params).scalar_one()


def topup(ledger: Ledger, run: Any, user: int, amount: int, key: str, bucket: str = "credit"):
    return run(
        ledger.credit,
        user_id=user,
        bucket=bucket,
        amount_nanos=amount,
        kind="topup",
        source="clearing:sandbox",
        idempotency_key=key,
    )


def no_errors(replies: list[dict[str, Any]]) -> None:
    bad = [r for r in replies if not r.get("ok", True) or r.get("errors")]
    assert not bad, f"unexpected errors in children: {bad}"


# ---- T7: double spend ----------------------------------------------------------------------------


def test_forty_concurrent_holds_against_ten_nanos_exactly_ten_succeed(
    db: Database, ledger: Ledger, clock: FrozenClock, run: Any
) -> None:
    run(ledger.open_user, 1)
    topup(ledger, run, 1, 10, "seed")
    n_workers, attempts = 8, 5
    with workers(n_workers, db.url, now_us(clock), users=[1]) as ws:
        replies = fire(
            ws,
            [
                {
                    "op": "hold",
                    "user": 1,
                    "bucket": "credit",
                    "amount": 1,
                    "keys": [f"h:{w}:{i}" for i in range(attempts)],
                }
                for w in range(n_workers)
            ],
        )
    results = [r for reply in replies for r in reply["results"]]
    assert len(results) == 40
    won = [r for r in results if r["ok"]]
    lost = [r for r in results if not r["ok"]]
    assert len(won) == 10, results
    assert len(lost) == 30, results
    for r in lost:
        assert r["error"] == "InsufficientBalance", r
        assert r["module"] == "tallygate.ledger.errors", r
        assert r["code"] == "insufficient_balance" and r["status"] == 402, r
        assert r["message"] == "insufficient balance in bucket credit: short by 0.000000001 USD", r
    # The winners' holds, and nothing else, are stored.
    with db.read() as conn:
        stored = conn.execute(text("SELECT hold_key, status, amount_nanos FROM holds")).all()
    assert sorted(k for k, _, _ in stored) == sorted(r["key"] for r in won)
    assert {(s, a) for _, s, a in stored} == {("pending", 1)}
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos, bal.available_nanos) == (10, 10, 0)
    assert_reconciles(run, now_us(clock))
    # Settling every winner spends the balance exactly; it is never negative.
    for r in won:
        run(ledger.settle_hold, hold_key=r["key"], actual_nanos=1)
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos) == (0, 0)
    assert_reconciles(run, now_us(clock))


# ---- T8: one idempotency key, many concurrent posts -----------------------------------------------


def test_twenty_concurrent_credits_with_one_key_post_one_entry(
    db: Database, ledger: Ledger, clock: FrozenClock, run: Any
) -> None:
    run(ledger.open_user, 1)
    """20 posts of one request at once: 10 processes, each posting from 2 threads on 2
    connections released by a barrier (half the process start-up cost on 2 cores)."""
    same = {
        "op": "credit_parallel",
        "n": 2,
        "user": 1,
        "bucket": "credit",
        "amount": 5_000,
        "key": "topup:once",
    }
    with workers(10, db.url, now_us(clock), users=[1]) as ws:
        replies = [r for reply in fire(ws, [dict(same) for _ in ws]) for r in reply["replies"]]
    assert len(replies) == 20
    no_errors(replies)
    fresh = [r for r in replies if not r["replayed"]]
    assert len(fresh) == 1, replies
    assert sum(r["replayed"] for r in replies) == 19
    assert {r["entry_id"] for r in replies} == {fresh[0]["entry_id"]}
    assert scalar(db, "SELECT COUNT(*) FROM entries") == 1
    assert scalar(db, "SELECT COUNT(*) FROM postings") == 2
    assert scalar(db, "SELECT COUNT(*) FROM lots") == 1
    assert run(ledger.balance, 1, "credit").balance_nanos == 5_000
    assert_reconciles(run, now_us(clock))


# ---- T11: a settle races the expiry sweeper -------------------------------------------------------


def _race_outcome(settle: dict[str, Any], sweep: dict[str, Any]) -> str:
    """Classify one race; anything but the two clean outcomes fails."""
    assert sweep["ok"], f"sweeper failed: {sweep}"
    if settle["ok"]:
        assert not settle["replayed"] and settle["charged"] == 7, settle
        assert sweep["expired"] == 0, (settle, sweep)
        return "settled"
    assert settle["error"] == HoldNotPending.__name__, settle
    assert settle["code"] == "hold_not_pending" and "is already expired" in settle["message"]
    assert sweep["expired"] == 1, (settle, sweep)
    return "expired"


def test_settle_racing_the_sweeper_has_exactly_one_outcome(
    db: Database, ledger: Ledger, clock: FrozenClock, run: Any
) -> None:
    """Ten rounds of one settle (its clock before the TTL) against one sweeper (its clock past
    TTL + grace) on a fresh hold, fired together; then one round forced in each order."""
    run(ledger.open_user, 1)
    topup(ledger, run, 1, 1_000, "seed")
    base = now_us(clock)
    outcomes: list[str] = []
    with workers(2, db.url, base, users=[1]) as (settler, sweeper):
        sweeper.call({"op": "clock", "now_us": base + PAST_TTL_AND_GRACE_US})

        def round_(i: int, order: str) -> str:
            key = f"race:{i}"
            run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=10, hold_key=key)
            settle_cmd = {"op": "settle", "key": key, "actual": 7}
            if order == "race":
                settle, sweep = fire([settler, sweeper], [settle_cmd, {"op": "sweep"}])
            elif order == "settle-first":
                settle = settler.call(settle_cmd)
                sweep = sweeper.call({"op": "sweep"})
            else:
                sweep = sweeper.call({"op": "sweep"})
                settle = settler.call(settle_cmd)
            outcome = _race_outcome(settle, sweep)
            with db.read() as conn:
                status = conn.execute(
                    text("SELECT status FROM holds WHERE hold_key = :k"), {"k": key}
                ).scalar_one()
            assert status == outcome
            return outcome

        for i in range(10):
            outcomes.append(round_(i, "race"))
        assert round_(10, "settle-first") == "settled"
        assert round_(11, "sweep-first") == "expired"
        outcomes += ["settled", "expired"]

    charged = 7 * outcomes.count("settled")
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos) == (1_000 - charged, 0), outcomes
    assert scalar(db, "SELECT COUNT(*) FROM entries WHERE kind = 'usage'") == outcomes.count(
        "settled"
    )
    assert_reconciles(run, base + PAST_TTL_AND_GRACE_US)
    print(f"settle-vs-sweeper outcomes: {outcomes}")


def test_one_sweep_over_many_holds_racing_their_settles(
    db: Database, ledger: Ledger, clock: FrozenClock, run: Any
) -> None:
    """One sweeper expires several holds of ONE user in one transaction while other processes
    settle those same holds: each hold resolves exactly once, and nobody deadlocks (the sweeper
    holds the bucket lock of its first hold while claiming the next hold row)."""
    run(ledger.open_user, 1)
    topup(ledger, run, 1, 1_000, "seed")
    base = now_us(clock)
    n = 5
    keys = [f"many:{i}" for i in range(n)]
    for key in keys:
        run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=10, hold_key=key)
        clock.advance(1)  # distinct expiry times: the sweeper visits them in this order
    with workers(n + 1, db.url, base, users=[1]) as ws:
        sweeper = ws[n]
        sweeper.call({"op": "clock", "now_us": base + n * 1_000_000 + PAST_TTL_AND_GRACE_US})
        replies = fire(
            ws,
            [{"op": "settle", "key": k, "actual": 7} for k in keys] + [{"op": "sweep"}],
        )
    settles, sweep = replies[:n], replies[n]
    deadlocks = [r for r in replies if not r["ok"] and r["error"] != "HoldNotPending"]
    assert not deadlocks, f"a child failed (deadlock / serialization failure?): {deadlocks}"
    settled = [k for k, r in zip(keys, settles, strict=True) if r["ok"]]
    expired = [k for k, r in zip(keys, settles, strict=True) if not r["ok"]]
    for r in settles:
        if not r["ok"]:
            assert "is already expired" in r["message"], r
    assert sweep["expired"] == len(expired), (settles, sweep)
    print(f"one sweep vs settles: settled={settled} expired={expired}")
    with db.read() as conn:
        statuses = dict(conn.execute(text("SELECT hold_key, status FROM holds")).all())
    assert statuses == {k: ("settled" if k in settled else "expired") for k in keys}
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos) == (1_000 - 7 * len(settled), 0)
    assert_reconciles(run, base + n * 1_000_000 + PAST_TTL_AND_GRACE_US)


def _wait_until_blocked(db: Database, worker: Worker) -> None:
    """Wait (bounded) until ``worker`` has started its transaction and, on PostgreSQL, until its
    backend is blocked by another backend's lock (``pg_blocking_pids``). SQLite offers no such
    view; there every writer is serialised by BEGIN IMMEDIATE, so the order of the queue cannot
    create a lock cycle and the child's own announcement is the synchronisation point."""
    import time

    begun = worker.reply()
    assert begun.get("begun"), begun
    if db.sqlite:
        return
    assert worker.backend_pid is not None
    deadline = time.monotonic() + 20
    while True:
        blockers = scalar(db, "SELECT pg_blocking_pids(:pid)", pid=worker.backend_pid)
        if blockers:
            return
        assert time.monotonic() < deadline, f"worker {worker.pid} never got blocked"
        time.sleep(0.01)  # polling an observed condition, bounded by the deadline


def test_sweeper_holding_the_bucket_lock_vs_settle_of_its_next_hold(
    db: Database, ledger: Ledger, clock: FrozenClock, run: Any
) -> None:
    """The interleaving the random race above hits only sometimes, forced step by step.

    Holds A then B (A expires first) on one bucket. The test holds the bucket's lock; the sweeper
    starts, claims hold A and queues on the bucket; a settle of B claims hold B and queues on the
    bucket behind it; the test lets go. The sweeper then owns the bucket and next wants hold B,
    which the settle owns while it waits for the bucket. With one lock order (hold row, then
    bucket) this must still end with A expired and B resolved exactly once — no deadlock."""
    run(ledger.open_user, 1)
    topup(ledger, run, 1, 1_000, "seed")
    base = now_us(clock)
    run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=10, hold_key="A")
    clock.advance(1)
    run(ledger.place_hold, user_id=1, bucket="credit", amount_nanos=20, hold_key="B")
    with workers(2, db.url, base, users=[1]) as (sweeper, settler):
        sweeper.call({"op": "clock", "now_us": base + 1_000_000 + PAST_TTL_AND_GRACE_US})
        with db.begin() as conn:
            conn.execute(
                text(
                    "SELECT id FROM accounts WHERE code = 'user:1:credit'"
                    + ("" if db.sqlite else " FOR UPDATE")
                )
            ).all()
            sweeper.send({"op": "sweep", "announce": True})
            _wait_until_blocked(db, sweeper)
            settler.send({"op": "settle", "key": "B", "actual": 15, "announce": True})
            _wait_until_blocked(db, settler)
        sweep, settle = sweeper.reply(), settler.reply()
    failures = [r for r in (sweep, settle) if not r["ok"] and r["error"] != "HoldNotPending"]
    assert not failures, f"deadlock / serialization failure between sweeper and settle: {failures}"
    with db.read() as conn:
        statuses = dict(conn.execute(text("SELECT hold_key, status FROM holds")).all())
    assert statuses["A"] == "expired"
    if settle["ok"]:
        assert statuses["B"] == "settled" and sweep["expired"] == 1
    else:
        assert "is already expired" in settle["message"]
        assert statuses["B"] == "expired" and sweep["expired"] == 2
    charged = 15 if settle["ok"] else 0
    bal = run(ledger.balance, 1, "credit")
    assert (bal.balance_nanos, bal.held_nanos) == (1_000 - charged, 0)
    assert_reconciles(run, base + 1_000_000 + PAST_TTL_AND_GRACE_US)


def test_hold_sweeper_and_lot_sweeper_over_two_users_do_not_deadlock(
    db: Database, ledger: Ledger, clock: FrozenClock, run: Any
) -> None:
    """Two sweepers in two processes, each touching users 1 and 2 in one transaction: the hold
    sweeper visits holds by expiry (user 1's first), the lot sweeper visits lots by id (user 2's
    first). Forced step by step as above: the test holds both buckets, each sweeper queues on its
    first bucket, the test lets go. Both must finish: every due hold expired, every expired lot's
    free remainder removed, no deadlock."""
    base = now_us(clock)
    for u in (2, 1):  # user 2's lot gets the lower id
        run(ledger.open_user, u)
        run(
            ledger.credit,
            user_id=u,
            bucket="credit",
            amount_nanos=100,
            kind="grant",
            source="promo:starter",
            idempotency_key=f"grant:{u}",
            lot_kind="promo",
            lot_expires_at=base + 100_000_000,
        )
    for u in (1, 2):  # user 1's hold expires first
        run(ledger.place_hold, user_id=u, bucket="credit", amount_nanos=10, hold_key=f"h{u}")
        clock.advance(1)
    later = base + 2_000_000 + PAST_TTL_AND_GRACE_US
    with workers(2, db.url, later, users=[1, 2]) as (hold_sweeper, lot_sweeper):
        with db.begin() as conn:
            conn.execute(
                text(
                    "SELECT id FROM accounts WHERE code IN ('user:1:credit', 'user:2:credit')"
                    + ("" if db.sqlite else " ORDER BY id FOR UPDATE")
                )
            ).all()
            hold_sweeper.send({"op": "sweep", "announce": True})
            _wait_until_blocked(db, hold_sweeper)
            lot_sweeper.send({"op": "sweep_lots", "announce": True})
            _wait_until_blocked(db, lot_sweeper)
        holds, lots = hold_sweeper.reply(), lot_sweeper.reply()
    failures = [r for r in (holds, lots) if not r["ok"]]
    assert not failures, f"deadlock / serialization failure between the sweepers: {failures}"
    with db.read() as conn:
        statuses = dict(conn.execute(text("SELECT hold_key, status FROM holds")).all())
    assert statuses == {"h1": "expired", "h2": "expired"}
    assert holds["expired"] == 2
    for u in (1, 2):
        bal = run(ledger.balance, u, "credit")
        # Lot expiry takes only the free part: 90 while the hold still reserved 10 (which a
        # later lot sweep takes), or all 100 if that user's hold had already expired. SQLite
        # runs the two sweeps one after the other, in either order.
        assert bal.held_nanos == 0 and bal.balance_nanos in (0, 10), (u, bal)
    assert_reconciles(run, later)


# ---- the audit chain under concurrent appends -----------------------------------------------------


def test_concurrent_audit_appends_keep_one_linear_chain(
    db: Database, clock: FrozenClock, run: Any
) -> None:
    from tallygate.audit.service import verify

    n_workers, each = 6, 10
    with workers(n_workers, db.url, now_us(clock)) as ws:
        replies = fire(
            ws,
            [
                {"op": "audit", "n": each, "actor": f"proc{w}", "now_us": now_us(clock)}
                for w in range(n_workers)
            ],
        )
    no_errors(replies)
    seqs = sorted(s for r in replies for s in r["seqs"])
    assert seqs == list(range(1, n_workers * each + 1))  # no seq reused: the chain did not fork
    assert scalar(db, "SELECT COUNT(*) FROM audit_events") == n_workers * each
    assert scalar(db, "SELECT count FROM audit_head WHERE id = 1") == n_workers * each
    with db.read() as conn:
        rows = conn.execute(text("SELECT prev_hash, hash FROM audit_events ORDER BY seq")).all()
    assert len({h for _, h in rows}) == len(rows)
    assert all(rows[i][0] == rows[i - 1][1] for i in range(1, len(rows)))
    assert run(verify) == []
    assert_reconciles(run, now_us(clock))


# ---- T9 + T25: opposite directions on the same users ----------------------------------------------


def test_opposite_direction_storm_no_deadlock_and_exact_final_state(
    db: Database, ledger: Ledger, clock: FrozenClock, run: Any
) -> None:
    """Credits, reversals (booking debt when spent), direct debits, holds with settle or release,
    from several processes on the same two users. No child may fail other than with the two
    documented refusals; afterwards every cached number equals its history (reconcile), and each
    user's net position equals exactly what the children report as succeeded."""
    users = [1, 2]
    for u in users:
        run(ledger.open_user, u)
        topup(ledger, run, u, 200, f"seed:{u}")
    n_workers = 6
    with workers(n_workers, db.url, now_us(clock), users=users) as ws:
        replies = fire(
            ws,
            [
                {
                    "op": "mix",
                    "seed": 1000 + w,
                    "tag": f"w{w}",
                    "users": users,
                    "bucket": "credit",
                    "ops": 25,
                }
                for w in range(n_workers)
            ],
        )
    no_errors(replies)
    assert set(r for reply in replies for r in reply["refusals"]) <= {
        "InsufficientBalance",
        "AccountOwes",
    }
    for u in users:
        t = {k: sum(r["totals"][str(u)][k] for r in replies) for k in replies[0]["totals"]["1"]}
        bal = run(ledger.balance, u, "credit")
        assert bal.held_nanos == 0
        assert bal.balance_nanos - bal.debt_nanos == (
            200 + t["in"] - t["reversed"] - t["debited"] - t["settled"]
        ), (u, t, bal)
    assert_reconciles(run, now_us(clock))


def test_worker_processes_are_separate(db: Database, clock: FrozenClock) -> None:
    """The harness itself: children are distinct OS processes with their own connections."""
    import os

    with workers(3, db.url, now_us(clock)) as ws:
        pids = {w.pid for w in ws}
        assert len(pids) == 3 and os.getpid() not in pids
        assert all(isinstance(w, Worker) and w.proc.poll() is None for w in ws)
    assert all(w.proc.poll() is not None for w in ws)
