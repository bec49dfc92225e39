"""Which SQL statements one billed request runs (hold, then settle + receipt), on SQLite and on
PostgreSQL: each is a round trip on PostgreSQL and a parse/step on SQLite.

    python bench/gateway/experiments/statements.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[2] / "src"))

import micro  # noqa: E402
import psycopg  # noqa: E402

from tallygate.billing import service as billing  # noqa: E402
from tallygate.db.engine import Database  # noqa: E402
from tallygate.ledger.tx import Tx  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


class Counting:
    def __init__(self, conn: Any, log: list[str]) -> None:
        self._c, self._log = conn, log

    def cursor(self) -> Any:
        cur = self._c.cursor()
        log = self._log

        class C:
            def execute(self, sql: str, params: Any = ()) -> Any:
                log.append(" ".join(sql.split())[:110])
                return cur.execute(sql, params)

            def executemany(self, sql: str, rows: Any) -> Any:
                log.append("(many) " + " ".join(sql.split())[:100])
                return cur.executemany(sql, rows)

            def __getattr__(self, name: str) -> Any:
                return getattr(cur, name)

        return C()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)


def run(url: str) -> None:
    subprocess.run(
        [sys.executable, str(HERE.parent / "seed.py"), url, "http://127.0.0.1:1/v1", micro.KEY],
        check=True,
    )
    lb = micro.LedgerBench(url)
    lb.inline(20)  # warm caches (account ids, statements)
    pooled = lb.db.engine.raw_connection()
    raw = pooled.driver_connection
    pg = url.startswith("postgresql")
    if pg:
        raw.autocommit = True
    for phase in ("hold (billing.begin)", "settle + receipt (billing.finish)"):
        log: list[str] = []
        tx = Tx(Counting(raw, log), postgres=pg)
        rid = f"stmt-{uuid.uuid4().hex[:8]}" if phase.startswith("hold") else rid  # noqa: F821
        tx.run("BEGIN" if pg else "BEGIN IMMEDIATE")
        if phase.startswith("hold"):
            billing.begin(tx, lb.ledger, **lb._begin_kw(rid))
        else:
            billing.finish(tx, lb.ledger, receipt=lb._receipt(rid), charge=40_000)
        tx.run("COMMIT")
        print(f"{'PostgreSQL' if pg else 'SQLite'} — {phase}: {len(log)} statements")
        for s in log:
            print("   ", s)
    pooled.close()
    lb.db.dispose()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{tmp}/s.db")
    name = f"tg_stmt_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        run(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    finally:
        Database  # noqa: B018 - imported for type context only
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
