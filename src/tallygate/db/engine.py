"""Engines for the two supported databases and the few differences between them.

SQLite: WAL, ``synchronous=NORMAL``, a busy timeout, and every write transaction opened with
``BEGIN IMMEDIATE`` so writers queue on the lock instead of failing on upgrade. A second
engine with plain deferred ``BEGIN`` serves read-only work so readers never wait for writers.
PostgreSQL: psycopg 3, READ COMMITTED; the ledger's conditional updates and row locks make
that safe (see docs/decisions/0003-ledger-concurrency.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_engine(url: str, *, begin: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        # Checkpoint every ~16 MB of WAL instead of 4 MB: hot pages (accounts, the tail of the
        # entries/postings tables) are copied back once per checkpoint, not once per 1000 pages.
        cur.execute("PRAGMA wal_autocheckpoint=4000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def make_engines(url: str) -> tuple[Engine, Engine]:
    """Return (write engine, read engine)."""
    if is_sqlite(url):
        return _sqlite_engine(url, begin="BEGIN IMMEDIATE"), _sqlite_engine(url, begin="BEGIN")
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return engine, engine


class Database:
    """The process's database handle: created in the app lifespan or by a CLI command."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.engine, self.read_engine = make_engines(url)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: commits on success, rolls back on error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.read_engine.begin() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction that sees one consistent snapshot for all its statements
        (REPEATABLE READ on PostgreSQL; a SQLite WAL read transaction already does)."""
        if self.sqlite:
            with self.read_engine.begin() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
