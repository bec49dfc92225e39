"""CPU per hold + settle pair on SQLite, one at a time (the c=1 ledger cost), under variants of
the writer connection's pragmas: decision 0015.

    .venv/bin/python bench/gateway/experiments/sqlite_pairs.py [-n 2000] [--variant NAME ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from micro import KEY, LedgerBench  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "cache64m": ["PRAGMA cache_size=-65536"],
    "mmap256m": ["PRAGMA mmap_size=268435456"],
    "cache+mmap": ["PRAGMA cache_size=-65536", "PRAGMA mmap_size=268435456"],
    "no-autocheckpoint": ["PRAGMA wal_autocheckpoint=0"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--variant", action="append")
    args = ap.parse_args()
    for name in args.variant or list(VARIANTS):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/pairs.db"
            subprocess.run(
                [sys.executable, str(HERE.parent / "seed.py"), url, "http://127.0.0.1:1/v1", KEY],
                check=True,
                capture_output=True,
            )
            lb = LedgerBench(url)
            pooled = lb.db.engine.raw_connection()
            for pragma in VARIANTS[name]:
                pooled.driver_connection.execute(pragma)
            pooled.close()  # back to the pool: inline() takes the same connection again
            lb.inline(500)
            vals = []
            for _ in range(args.repeat):
                c0 = time.process_time()
                lb.inline(args.n)
                vals.append((time.process_time() - c0) / args.n * 1e6)
            lb.db.dispose()
        print(f"{name:20s} {statistics.median(vals):8.1f} µs/pair  {[round(v) for v in vals]}")


if __name__ == "__main__":
    main()
