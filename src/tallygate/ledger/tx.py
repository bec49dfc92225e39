"""A thin wrapper over one DB-API connection inside an open transaction.

The ledger's statements are plain SQL written once with ``?`` placeholders and run through the
raw driver (sqlite3 or psycopg 3): on the hot path that is several times cheaper in CPU than
SQLAlchemy's ORM or even Core compilation (docs/decisions/0003-ledger-concurrency.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

Row = tuple[Any, ...]


class Tx:
    """One open transaction. ``postgres`` selects placeholder style and row-lock clauses."""

    __slots__ = ("conn", "postgres", "fault", "_sql", "prefix", "solo", "await_results")

    def __init__(
        self,
        conn: Any,
        *,
        postgres: bool,
        fault: Callable[[str], None] | None = None,
        prefix: tuple[str, ...] = (),
        solo: bool = False,
        await_results: Callable[[], None] | None = None,
    ) -> None:
        self.conn = conn
        self.postgres = postgres
        self.fault = fault
        self._sql: dict[str, str] = {}
        self.prefix = prefix
        """PostgreSQL, from the ledger executor: statements (``BEGIN`` …) not sent yet. They go
        out in one pipeline with the first statement of the transaction — one round trip for
        both (decision 0015); empty once sent."""
        self.solo = solo
        """The transaction is one ledger call's alone: ``one(..., commit=True)`` may send its
        COMMIT in the same pipeline (see ``one``)."""
        self.await_results = await_results
        """PostgreSQL, a batch in pipeline mode (ledger.executor): a statement is only queued,
        and this hands control back to the executor until the batch's statements have been sent
        together and their results have arrived."""

    def _execute(self, cur: Any, sql: str, params: Sequence[Any], commit: bool = False) -> None:
        if self.await_results is not None:
            cur.execute(self._q(sql), params)
            self.await_results()
            return
        if not self.prefix:
            cur.execute(self._q(sql), params)
            return
        prefix, self.prefix = self.prefix, ()
        ahead = commit and self.solo and self.fault is None
        with self.conn.pipeline():
            for statement in prefix:
                self.conn.execute(statement)
            cur.execute(self._q(sql), params)
            if ahead:
                self.conn.execute("COMMIT")
        # Leaving the pipeline synced it: every result (and any error) has arrived. After a
        # COMMIT sent ahead, a further statement opens a new transaction the same way.
        if ahead:
            self.prefix = prefix

    def _q(self, sql: str) -> str:
        if not self.postgres:
            return sql
        cached = self._sql.get(sql)
        if cached is None:
            cached = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return cached

    @property
    def for_update(self) -> str:
        """Row-lock suffix: PostgreSQL locks the row; SQLite writers are already serialised."""
        return " FOR UPDATE" if self.postgres else ""

    def one(self, sql: str, params: Sequence[Any] = (), *, commit: bool = False) -> Row | None:
        """One row of ``sql``. ``commit=True`` (PostgreSQL): when this is the first statement of
        a transaction that is one ledger call's alone, BEGIN, the statement and COMMIT go out
        in one pipeline — one round trip for the whole transaction. The caller promises that
        the statement is atomic on its own and that whatever it runs afterwards may run in a
        transaction of its own (reads, a refusal, an independent retry)."""
        cur = self.conn.cursor()
        try:
            self._execute(cur, sql, params, commit)
            row = cur.fetchone()
            return tuple(row) if row is not None else None
        finally:
            cur.close()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.conn.cursor()
        try:
            self._execute(cur, sql, params)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.cursor()
        try:
            self._execute(cur, sql, params)
            return int(cur.rowcount)
        finally:
            cur.close()

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.flush()
        cur = self.conn.cursor()
        try:
            cur.executemany(self._q(sql), list(rows))
            if self.await_results is not None:
                self.await_results()
        finally:
            cur.close()

    def flush(self) -> None:
        """Send the statements still held back (``prefix``) on their own."""
        prefix, self.prefix = self.prefix, ()
        for statement in prefix:
            self.conn.execute(statement)

    def point(self, name: str) -> None:
        """A fault-injection point (tests only; a no-op unless a fault hook is configured)."""
        if self.fault is not None:
            self.fault(name)


def from_connection(conn: Any, fault: Callable[[str], None] | None = None) -> Tx:
    """A Tx over the DB-API connection under a SQLAlchemy ``Connection`` (same transaction)."""
    raw = conn.connection.driver_connection
    return Tx(raw, postgres=conn.dialect.name == "postgresql", fault=fault)
