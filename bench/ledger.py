"""Ledger benchmark: hold+settle pairs per second and CPU per pair, SQLite and PostgreSQL.

Runs each scenario ``--repeat`` times and reports the median, next to a reference run in the
same script (the bare minimum a pair needs on that database: one conditional UPDATE to
reserve and one UPDATE + INSERT to charge, raw driver, committed the same way), so the table
reads as a ratio that survives a faster or slower machine. ``reconcile`` runs after every
scenario and must report zero drift. Writes the table to docs/benchmarks.md (the ledger
section) unless ``--no-write``.

    .venv/bin/python bench/ledger.py            # full run, ~2–3 minutes
    .venv/bin/python bench/ledger.py --quick    # smaller counts
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tallygate.db.engine import Database  # noqa: E402
from tallygate.db.migrate import upgrade  # noqa: E402
from tallygate.ledger import Ledger  # noqa: E402
from tallygate.ledger.executor import LedgerExecutor  # noqa: E402
from tallygate.ledger.reconcile import reconcile  # noqa: E402
from tallygate.ledger.tx import Tx  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CURRENCIES = {"credit": "USD", "routed": "CNY"}
USERS = 256
HOLD = 1_000_000  # nano-units per hold
CHARGE = 600_000


@dataclass
class Result:
    name: str
    backend: str
    in_flight: str
    pairs_per_s: float
    cpu_us_per_pair: float
    drift: str


def make_db(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}"
    else:
        name = f"tg_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    db = Database(url)
    ledger = Ledger(CURRENCIES)
    with db.begin() as conn:
        tx = ledger.tx(conn)
        ledger.bootstrap(tx)
        for user in range(1, USERS + 1):
            ledger.open_user(tx, user)
            ledger.credit(
                tx,
                user_id=user,
                bucket="credit",
                amount_nanos=10**15,
                kind="topup",
                source="clearing:sandbox",
                idempotency_key=f"seed:{user}",
            )
    db.dispose()
    return url


def drop_db(url: str) -> None:
    if url.startswith("postgresql"):
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def check(url: str) -> str:
    db = Database(url)
    ledger = Ledger(CURRENCIES)
    with db.begin() as conn:
        report = reconcile(ledger.tx(conn), now_us=ledger.now_us(), grace_us=ledger.hold_grace_us)
    db.dispose()
    return "0" if report.ok else f"{len(report.problems)} problems"


def _pair(ledger: Ledger, tx: Tx, user: int, key: str) -> None:
    ledger.place_hold(tx, user_id=user, bucket="credit", amount_nanos=HOLD, hold_key=key)
    ledger.settle_hold(tx, hold_key=key, actual_nanos=CHARGE)


def sequential(url: str, pairs: int, tag: str, start: Any = None) -> tuple[float, float]:
    """One at a time, in the caller's thread, on one raw connection: hold in one transaction,
    settle in another — the ledger's own cost, without a thread hop."""
    db = Database(url)
    ledger = Ledger(CURRENCIES)
    pooled = db.engine.raw_connection()
    raw = pooled.driver_connection
    postgres = not db.sqlite
    if postgres:
        raw.autocommit = True
    tx = Tx(raw, postgres=postgres)
    begin = "BEGIN" if postgres else "BEGIN IMMEDIATE"
    run = tag + uuid.uuid4().hex[:6]
    if start is not None:
        start.wait()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(pairs):
        key = f"{run}:{i}"
        tx.run(begin)
        ledger.place_hold(
            tx, user_id=i % USERS + 1, bucket="credit", amount_nanos=HOLD, hold_key=key
        )
        tx.run("COMMIT")
        tx.run(begin)
        ledger.settle_hold(tx, hold_key=key, actual_nanos=CHARGE)
        tx.run("COMMIT")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    pooled.close()
    db.dispose()
    return pairs / wall, cpu / pairs * 1e6


def in_flight(
    url: str, pairs: int, tag: str, width: int = 64, start: Any = None
) -> tuple[float, float]:
    """``width`` concurrent requests in one process (asyncio), sharing the group-commit writer."""
    db = Database(url)
    ledger = Ledger(CURRENCIES)
    executor = LedgerExecutor(db.engine, max_batch=width)
    run = tag + uuid.uuid4().hex[:6]

    async def worker(w: int) -> None:
        for i in range(w, pairs, width):
            key = f"{run}:{i}"
            await executor.call(
                ledger.place_hold,
                user_id=i % USERS + 1,
                bucket="credit",
                amount_nanos=HOLD,
                hold_key=key,
            )
            await executor.call(ledger.settle_hold, hold_key=key, actual_nanos=CHARGE)

    async def main() -> None:
        await asyncio.gather(*(worker(w) for w in range(width)))

    if start is not None:
        start.wait()
    cpu0, t0 = time.process_time(), time.perf_counter()
    asyncio.run(main())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    executor.close()
    db.dispose()
    return pairs / wall, cpu / pairs * 1e6


def _proc(url: str, pairs: int, tag: str, width: int, start: Any, out: Any) -> None:
    ready = time.perf_counter()
    rate, cpu = (
        sequential(url, pairs, tag, start)
        if width == 1
        else in_flight(url, pairs, tag, width, start)
    )
    del ready
    out.put((time.time() - pairs / rate, time.time(), cpu))


def processes(url: str, pairs: int, procs: int, width: int) -> tuple[float, float]:
    """``procs`` processes released together by one event; throughput over the union of their
    measured windows (process start-up is not counted)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Event()
    per = pairs // procs
    workers = [
        ctx.Process(target=_proc, args=(url, per, f"p{n}-", width, start, out))
        for n in range(procs)
    ]
    for p in workers:
        p.start()
    time.sleep(3)  # let every process import and connect before the start signal
    start.set()
    results = [out.get(timeout=600) for _ in workers]
    for p in workers:
        p.join()
    window = max(r[1] for r in results) - min(r[0] for r in results)
    return per * procs / window, statistics.mean(r[2] for r in results)


def reference(url: str, pairs: int) -> tuple[float, float]:
    """The floor: reserve + charge as bare raw-driver UPDATEs on a scratch table, two commits."""
    db = Database(url)
    postgres = not db.sqlite
    raw = db.engine.raw_connection()
    conn = raw.driver_connection
    if postgres:
        conn.autocommit = True
    q = (lambda s: s.replace("?", "%s")) if postgres else (lambda s: s)
    cur = conn.cursor()
    # A scratch table shaped like the accounts row, so the reference never touches the ledger.
    cur.execute(
        "CREATE TABLE IF NOT EXISTS bench_ref (id INTEGER PRIMARY KEY, "
        "balance_nanos BIGINT NOT NULL, held_nanos BIGINT NOT NULL, "
        "charged_nanos BIGINT NOT NULL DEFAULT 0)"
    )
    cur.execute("DELETE FROM bench_ref")
    for i in range(1, USERS + 1):
        cur.execute(
            q("INSERT INTO bench_ref (id, balance_nanos, held_nanos) VALUES (?, ?, 0)"), (i, 10**15)
        )
    if not postgres:
        conn.commit() if conn.in_transaction else None
    ids = list(range(1, USERS + 1))
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(pairs):
        acc = ids[i % len(ids)]
        cur.execute("BEGIN" if postgres else "BEGIN IMMEDIATE")
        cur.execute(
            q(
                "UPDATE bench_ref SET held_nanos = held_nanos + ? WHERE id = ? "
                "AND balance_nanos - held_nanos >= ?"
            ),
            (HOLD, acc, HOLD),
        )
        cur.execute("COMMIT")
        cur.execute("BEGIN" if postgres else "BEGIN IMMEDIATE")
        cur.execute(
            q(
                "UPDATE bench_ref SET held_nanos = held_nanos - ?, "
                "balance_nanos = balance_nanos - ? WHERE id = ?"
            ),
            (HOLD, CHARGE, acc),
        )
        cur.execute(
            q("UPDATE bench_ref SET charged_nanos = charged_nanos + ? WHERE id = ?"), (CHARGE, acc)
        )
        cur.execute("COMMIT")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    cur.close()
    raw.close()
    db.dispose()
    return pairs / wall, cpu / pairs * 1e6


def median_of(repeat: int, fn, *args) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    runs = [fn(*args) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def durability(url: str) -> str:
    if url.startswith("sqlite"):
        return "SQLite WAL, synchronous=NORMAL"
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        sc = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
        fs = conn.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
        ver = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return f"PostgreSQL {ver.split()[0]}, synchronous_commit={sc}, fsync={fs}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    n = 1000 if args.quick else 4000
    results: list[Result] = []
    notes: list[str] = []
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            url = make_db(backend, Path(tmp))
            notes.append(f"- {backend}: {durability(url)}")
            ref = median_of(args.repeat, reference, url, n)
            results.append(Result("reference (bare UPDATEs)", backend, "1", *ref, "-"))
            seq = median_of(args.repeat, sequential, url, n, "s")
            results.append(Result("hold+settle", backend, "1", *seq, check(url)))
            one = median_of(args.repeat, in_flight, url, n, "o", 1)
            results.append(Result("hold+settle via async executor", backend, "1", *one, check(url)))
            fl = median_of(args.repeat, in_flight, url, n * 4, "f")
            results.append(
                Result("hold+settle via async executor", backend, "64 (1 process)", *fl, check(url))
            )
            if backend == "postgresql":
                pp = median_of(args.repeat, processes, url, n * 2, 8, 1)
                results.append(
                    Result(
                        "hold+settle via async executor",
                        backend,
                        "8 processes × 1",
                        *pp,
                        check(url),
                    )
                )
                pq = median_of(args.repeat, processes, url, n * 4, 8, 8)
                results.append(
                    Result(
                        "hold+settle via async executor",
                        backend,
                        "8 processes × 8",
                        *pq,
                        check(url),
                    )
                )
                pr = median_of(args.repeat, processes, url, n * 8, 8, 32)
                results.append(
                    Result(
                        "hold+settle via async executor",
                        backend,
                        "8 processes × 32",
                        *pr,
                        check(url),
                    )
                )
            drop_db(url)
    lines = render(results, notes, args.repeat)
    print("\n".join(lines))
    if not args.no_write:
        write_section(lines)


def render(results: list[Result], notes: list[str], repeat: int) -> list[str]:
    refs = {r.backend: r for r in results if r.name.startswith("reference")}
    out = [
        "## Ledger: hold + settle pairs",
        "",
        f"`bench/ledger.py`, median of {repeat} runs, {os.cpu_count()} cores; {USERS} users; "
        "each pair is a hold and its settlement in two separate transactions (as a request "
        "does). CPU is the client process's CPU per pair (for PostgreSQL the server's own CPU "
        "is not included). Ratio = pairs/s against the reference run on the same database.",
        "",
        "| backend | scenario | in flight | pairs/s | CPU µs/pair (client) | vs reference | drift after |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        ratio = r.pairs_per_s / refs[r.backend].pairs_per_s
        out.append(
            f"| {r.backend} | {r.name} | {r.in_flight} | {r.pairs_per_s:,.0f} | "
            f"{r.cpu_us_per_pair:,.0f} | {ratio:.2f}× | {r.drift} |"
        )
    out += ["", "Durability settings:", *notes, ""]
    return out


def write_section(lines: list[str]) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nWritten by the scripts in `bench/`.\n\n"
    )
    start = text.find("## Ledger: hold + settle pairs")
    if start >= 0:
        end = text.find("\n## ", start + 5)
        text = text[:start] + text[end + 1 :] if end >= 0 else text[:start]
    path.parent.mkdir(exist_ok=True)
    path.write_text(text.rstrip() + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
