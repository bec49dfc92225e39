"""Group commit: one writer thread per process runs queued ledger calls in shared transactions.

Callers (the async gateway, or threads) submit ``fn(tx, *args)``; the writer takes whatever is
queued — up to ``max_batch`` calls — into ONE transaction and commits once. No savepoints are
needed: the ledger's contract is that a call which raises a ``TallygateError`` (insufficient
balance, conflict …) has written nothing, so its neighbours commit unaffected. Results are
delivered only after the COMMIT — one wake-up per event loop per batch — so no caller ever sees
money that could still roll back.
With one call queued it is an ordinary transaction; under load, the fsync and lock cost of a
commit is shared by the batch (docs/decisions/0003-ledger-concurrency.md).

Any unexpected error (a lost connection, a serialization failure) rolls the batch back and
re-runs each call alone, so one bad call cannot fail its neighbours.

On PostgreSQL, a batch made only of calls marked ``relaxed_commit`` (reservations such as
holds, which move no money) commits with ``synchronous_commit = off``: the commit returns
before its WAL reaches the disk. A crash of the database server can then lose the last
holds, never a settlement (a settlement's synchronous commit flushes every earlier WAL record,
so a settlement can never outlive its hold). docs/decisions/0006-relaxed-hold-commits.md.

On PostgreSQL, BEGIN (and that SET LOCAL) are not sent on their own: they go out in one psycopg
pipeline with the transaction's first statement (``Tx.prefix``), so a one-statement ledger call
is two round trips (BEGIN + statement, COMMIT) instead of three or four
(docs/decisions/0015-gateway-fixed-costs.md)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet
from sqlalchemy import Engine

from tallygate.errors import TallygateError
from tallygate.ledger.tx import Tx

logger = logging.getLogger(__name__)
T = TypeVar("T")
# (fn, args, kwargs, future, loop): an asyncio future and its loop, or a concurrent future.
_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Any, Any]
_STOP = object()
CHECKPOINT_SECONDS = 0.05
"""SQLite: how often the checkpoint thread looks whether to copy the WAL back."""
CHECKPOINT_BATCHES = 256
"""… and how many committed transactions make it do so (~4,000 WAL pages at c=1 here)."""
CATCH_UP_PASSES = 6
"""At most this many more passes, writers running, before the one that holds the writer off…"""
CATCH_UP_FRAMES = 64
"""… stopping once the writer appended no more than this many frames during the last one."""
AUTOCHECKPOINT_PAGES = 4000  # db.engine's per-connection setting, restored on the way back
_BEGIN = ("BEGIN",)
_RELAXED_BEGIN = ("BEGIN", "SET LOCAL synchronous_commit = off")


class LedgerExecutor:
    def __init__(
        self, engine: Engine, *, fault: Callable[[str], None] | None = None, max_batch: int = 64
    ) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._fault = fault
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Call | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="ledger-writer", daemon=True)
        self._raw: Any = None
        self._busy = threading.Lock()
        """Held while a batch runs, by the writer thread or inline by ``call``."""
        self.active = 0
        """Requests in flight that will call the ledger (kept by the gateway). At most one:
        ``call`` runs inline on the event loop when the writer is idle — decision 0015."""
        self.batches = 0
        self.calls = 0
        self.inline = 0
        self.checkpoints = 0
        self._stopping = threading.Event()
        self._checkpointer: threading.Thread | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="ledger-checkpoint", daemon=True
            )
            self._checkpointer.start()
        self._thread.start()

    # ---- submitting -----------------------------------------------------------------------

    def submit(
        self, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, args, kwargs, future, None))
        return future

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.active <= 1 and self._queue.empty() and self._busy.acquire(blocking=False):
            # A lone request: run it here, on the event loop, instead of two thread hand-offs
            # (queue -> writer wake-up, call_soon_threadsafe -> loop wake-up) and the GIL
            # ping-pong between them; nothing else is in flight for the loop to serve. With
            # more requests in flight, calls queue for the writer and commit in batches.
            try:
                self.inline += 1
                ((result, error),) = self._outcomes([(fn, args, kwargs, None, None)])
            finally:
                self._busy.release()
            if error is not None:
                raise error
            return result  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, kwargs, future, loop))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._stopping.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout)

    # ---- SQLite: the WAL checkpoint, off the commit path --------------------------------------

    def _checkpoint_loop(self) -> None:
        """The writer connection does not checkpoint (``wal_autocheckpoint=0``): a checkpoint
        inside COMMIT copies pages and runs two fdatasyncs while the writer — or, for a lone
        request, the event loop — waits. This thread checkpoints on its own connection instead
        (PASSIVE: it never waits for a reader; only its last, short pass holds our writer off —
        see below): once CHECKPOINT_BATCHES
        transactions have committed since the last one (about what ``wal_autocheckpoint``'s
        4,000 pages took at c=1), or after a second with any."""
        pooled = None
        last_batches, last_at = self.batches, time.monotonic()
        try:
            while not self._stopping.wait(CHECKPOINT_SECONDS):
                done = self.batches - last_batches
                if done < CHECKPOINT_BATCHES and not (done and time.monotonic() - last_at >= 1):
                    continue
                last_batches, last_at = self.batches, time.monotonic()
                try:
                    if pooled is None:
                        pooled = self._engine.raw_connection()
                    cur = pooled.cursor()
                    # The bulk, writers running; then catch-up passes, each copying what the
                    # writer appended during the one before, until that is a few frames.
                    logged = _passive(cur)
                    for _ in range(CATCH_UP_PASSES):
                        before, logged = logged, _passive(cur)
                        if logged - before <= CATCH_UP_FRAMES:
                            break
                    # The WAL starts again from its beginning only at a write that finds every
                    # frame copied back, and under steady load the writer has always appended
                    # a few more by the time the copy ends: without this step the file grows
                    # for as long as the load lasts, each new frame costing the kernel a fresh
                    # block (decision 0020). The rest — a few frames — is copied with the
                    # writer held off, so the next write restarts the WAL. What holds the writer
                    # off is this pass's two fdatasyncs, so the catch-up passes above make the
                    # data they flush small (decision 0021).
                    with self._busy:
                        _passive(cur)
                    cur.close()
                    self.checkpoints += 1
                except Exception:  # noqa: BLE001 - retried at the next tick
                    logger.warning("ledger: WAL checkpoint failed", exc_info=True)
                    if pooled is not None:
                        pooled.invalidate()
                        pooled = None
        finally:
            if pooled is not None:
                pooled.close()

    # ---- the writer thread ------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._raw is None:
            pooled = self._engine.raw_connection()
            self._raw = pooled.driver_connection
            if self._postgres:
                self._raw.autocommit = True  # we issue BEGIN/COMMIT ourselves
            elif self._checkpointer is not None:
                self._exec("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it
            self._pooled = pooled
        return self._raw

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Call] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._run(batch)
            if stop:
                break
        if self._raw is not None:
            if not self._postgres and self._checkpointer is not None:
                self._exec(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            self._pooled.close()

    def _exec(self, sql: str) -> None:
        cur = self._raw.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()

    def _outcomes(self, batch: list[_Call]) -> list[tuple[Any, BaseException | None]]:
        self.batches += 1
        self.calls += len(batch)
        try:
            return self._run_batch(batch) if len(batch) > 1 else [self._run_one(batch[0])]
        except Exception:
            self._reset()
            outcomes: list[tuple[Any, BaseException | None]] = []
            for call in batch:
                try:
                    outcomes.append(self._run_one(call))
                except Exception as exc:  # noqa: BLE001 - delivered to the caller
                    self._reset()
                    outcomes.append((None, exc))
            return outcomes

    def _run(self, batch: list[_Call]) -> None:
        with self._busy:
            outcomes = self._outcomes(batch)
        by_loop: dict[Any, list[tuple[Any, Any, BaseException | None]]] = {}
        for (_fn, _a, _k, future, loop), (result, error) in zip(batch, outcomes, strict=True):
            if loop is None:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            else:
                by_loop.setdefault(loop, []).append((future, result, error))
        for loop, done in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, done)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

    def _begin(self, calls: list[_Call]) -> Tx:
        raw = self._connection()
        if not self._postgres:
            self._exec("BEGIN IMMEDIATE")
            return Tx(raw, postgres=False, fault=self._fault)
        relaxed = all(getattr(c[0], "relaxed_commit", False) for c in calls)
        prefix = _RELAXED_BEGIN if relaxed else _BEGIN
        if len(calls) > 1:
            # A batch (under load): its BEGIN is shared by the batch; psycopg's pipeline mode
            # costs more CPU here than the round trip it saves (decision 0015).
            for statement in prefix:
                self._exec(statement)
            return Tx(raw, postgres=True, fault=self._fault)
        # A call alone: BEGIN (and SET LOCAL) are held back and sent in one pipeline with the
        # transaction's first statement — one round trip instead of two or three.
        return Tx(raw, postgres=True, fault=self._fault, prefix=prefix, solo=True)

    def _end(self, tx: Tx, statement: str) -> None:
        """COMMIT or ROLLBACK — nothing at all when no transaction is open: it never sent a
        statement, or its only statement was sent with its COMMIT (``Tx.one(commit=True)``)."""
        if tx.prefix:
            tx.prefix = ()
            return
        self._exec(statement)

    def _run_one(self, call: _Call) -> tuple[Any, BaseException | None]:
        fn, args, kwargs, _future, _loop = call
        tx = self._begin([call])
        try:
            result = fn(tx, *args, **kwargs)
        except TallygateError as exc:
            self._end(tx, "ROLLBACK")
            return None, exc
        except BaseException:
            self._end(tx, "ROLLBACK")
            raise
        self._end(tx, "COMMIT")
        return result, None

    def _run_batch(self, batch: list[_Call]) -> list[tuple[Any, BaseException | None]]:
        if self._postgres:
            return self._run_pipelined(batch)
        tx = self._begin(batch)
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            for fn, args, kwargs, _future, _loop in batch:
                try:
                    outcomes.append((fn(tx, *args, **kwargs), None))
                except TallygateError as exc:  # refused before writing anything
                    outcomes.append((None, exc))
            self._end(tx, "COMMIT")
        except BaseException:
            self._end(tx, "ROLLBACK")
            raise
        return outcomes

    def _run_pipelined(self, batch: list[_Call]) -> list[tuple[Any, BaseException | None]]:
        """PostgreSQL, a batch: its statements go out together instead of one round trip each.

        Each call runs in a greenlet of its own. Its ``Tx`` only queues a statement (psycopg's
        pipeline mode) and switches back here; once every call has queued one, a single sync
        sends them all — behind BEGIN, the first time — and collects their results, and each
        call resumes with its own: most finish (one statement each), the rest queue their next
        one for the next round. So the backend runs the batch's statements back to back while
        this thread is not scheduled, instead of waiting on it between every two of them
        (decision 0022). Each call's statements still run in its own order; calls are
        independent requests, as in a batch without pipelining. COMMIT goes out with the
        sync that ends the pipeline, and results are delivered only after it."""
        raw = self._connection()
        relaxed = all(getattr(c[0], "relaxed_commit", False) for c in batch)
        hub = getcurrent()
        tx = Tx(raw, postgres=True, fault=self._fault, await_results=lambda: hub.switch())

        def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                return fn(tx, *args, **kwargs), None
            except TallygateError as exc:  # refused before writing anything
                return None, exc

        outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * len(batch)
        waiting: list[tuple[int, greenlet]] = []
        try:
            with raw.pipeline() as pipeline:
                for statement in _RELAXED_BEGIN if relaxed else _BEGIN:
                    raw.execute(statement)
                for i, (fn, args, kwargs, _future, _loop) in enumerate(batch):
                    worker = greenlet(call)
                    outcome = worker.switch(fn, args, kwargs)
                    if worker.dead:
                        outcomes[i] = outcome
                    else:
                        waiting.append((i, worker))
                while waiting:
                    pipeline.sync()
                    resumed, waiting = waiting, []
                    for i, worker in resumed:
                        outcome = worker.switch()
                        if worker.dead:
                            outcomes[i] = outcome
                        else:
                            waiting.append((i, worker))
                raw.execute("COMMIT")
        finally:
            for _i, worker in waiting:  # an unexpected error: unwind the calls left suspended
                worker.throw(GreenletExit)
        return outcomes

    def _reset(self) -> None:
        """After an unexpected error: leave no transaction open; reconnect if the connection
        itself is broken."""
        if self._raw is None:
            return
        try:
            self._exec("ROLLBACK")
        except Exception:  # noqa: BLE001 - no transaction was open, or the connection is gone
            try:
                self._exec("SELECT 1")
            except Exception:  # noqa: BLE001 - unusable: drop it, the next call reconnects
                self._pooled.invalidate()
                self._raw = None


def _passive(cur: Any) -> int:
    """One PASSIVE checkpoint pass; the number of frames the WAL held when it began."""
    cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
    row = cur.fetchone()
    cur.fetchall()
    return int(row[1]) if row is not None else 0


def _resolve(done: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, result, error in done:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
