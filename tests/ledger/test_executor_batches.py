"""The ledger executor's batches: calls queued together commit in one transaction (on PostgreSQL
with their statements pipelined — decision 0022), and each call still gets exactly its own
outcome: a success, its own refusal, or — when one call fails unexpectedly — a re-run of every
call on its own, so that the failure stays that call's."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from tallygate.db.engine import Database
from tallygate.ledger import InsufficientBalance, Ledger
from tallygate.ledger.executor import LedgerExecutor
from tallygate.ledger.holds import Hold
from tallygate.ledger.reconcile import reconcile
from tallygate.ledger.tx import Tx
from tests.conftest import TxRunner

USD = 1_000_000_000


@pytest.fixture
def executor(db: Database, ledger: Ledger, run: TxRunner) -> Iterator[LedgerExecutor]:
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
    ex = LedgerExecutor(db.engine)
    yield ex
    ex.close()
    report = run(reconcile, now_us=ledger.now_us(), grace_us=ledger.hold_grace_us)
    assert report.ok, report.problems


def one_batch(
    executor: LedgerExecutor, calls: list[tuple[Callable[..., Any], dict[str, Any]]]
) -> list[Future[Any]]:
    """Queue ``calls`` while the writer is held by another call, so they run as one batch."""
    gate = threading.Event()
    started = threading.Event()

    def hold_the_writer(tx: Tx) -> None:
        started.set()
        gate.wait(10)

    first = executor.submit(hold_the_writer)
    assert started.wait(10)
    batches, calls_before = executor.batches, executor.calls
    futures = [executor.submit(fn, **kwargs) for fn, kwargs in calls]
    gate.set()
    first.result(10)
    for future in futures:
        future.exception(10)
    assert (executor.batches - batches, executor.calls - calls_before) == (1, len(calls))
    return futures


def hold(ledger: Ledger, key: str, amount: int = USD) -> tuple[Callable[..., Any], dict[str, Any]]:
    return ledger.place_hold, {
        "user_id": 1,
        "bucket": "credit",
        "hold_key": key,
        "amount_nanos": amount,
    }


def held_and_balance(run: TxRunner, ledger: Ledger) -> tuple[int, int]:
    b = run(ledger.balance, 1, "credit")
    return b.held_nanos, b.balance_nanos


def test_a_batch_gives_every_call_its_own_outcome_in_queue_order(
    executor: LedgerExecutor, ledger: Ledger, run: TxRunner
) -> None:
    calls = [hold(ledger, f"h{i}") for i in range(10)]
    calls.insert(4, hold(ledger, "h1"))  # a retried hold: replays, reserves nothing more
    calls.append(hold(ledger, "h10"))  # one dollar more than the balance

    futures = one_batch(executor, calls)

    placed: list[Hold] = [f.result() for f in futures[:-1]]
    assert [h.hold_key for h in placed] == [kwargs["hold_key"] for _fn, kwargs in calls[:-1]]
    assert [h.replayed for h in placed] == [False] * 4 + [True] + [False] * 6
    assert isinstance(futures[-1].exception(), InsufficientBalance)
    assert held_and_balance(run, ledger) == (10 * USD, 10 * USD)
    for i in range(10):
        run(ledger.release_hold, hold_key=f"h{i}")


def test_one_call_failing_unexpectedly_fails_alone_and_its_neighbours_commit(
    executor: LedgerExecutor, ledger: Ledger, run: TxRunner
) -> None:
    for i in range(6):
        run(ledger.place_hold, user_id=1, bucket="credit", hold_key=f"h{i}", amount_nanos=USD)

    def broken(tx: Tx) -> None:
        tx.one("SELECT amount FROM no_such_table")

    calls: list[tuple[Callable[..., Any], dict[str, Any]]] = [
        (ledger.settle_hold, {"hold_key": f"h{i}", "actual_nanos": USD // 2}) for i in range(3)
    ]
    calls.append((broken, {}))
    calls += [(ledger.release_hold, {"hold_key": f"h{i}"}) for i in range(3, 6)]

    futures = one_batch(executor, calls)

    assert futures[3].exception() is not None
    settled = [f.result() for f in futures[:3]]
    assert [s.charged_nanos for s in settled] == [USD // 2] * 3
    assert [f.result().status for f in futures[4:]] == ["released"] * 3
    assert held_and_balance(run, ledger) == (0, 10 * USD - 3 * (USD // 2))
