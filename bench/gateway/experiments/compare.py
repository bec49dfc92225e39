"""A/B two running gateways with the same wrk load, interleaved, median of N rounds.

    python bench/gateway/experiments/compare.py NAME=URL=PID NAME=URL=PID [--c 1 16] [--rounds 3]
        [--duration 4] [--auth KEY]

Prints, per concurrency and gateway: req/s, p50, p99 (ms) and CPU ms per request (process tree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import proctree  # noqa: E402


def wrk(url: str, c: int, d: float, auth: str) -> dict:
    env = dict(os.environ, BENCH_AUTH=auth)
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            "wrk",
            "-t1",
            f"-c{c}",
            f"-d{d:g}s",
            "-s",
            str(HERE.parent / "lua" / "chat.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    return json.loads(line[8:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("targets", nargs="+")
    ap.add_argument("--c", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--auth", default="tg-bench-" + "0123456789abcdef" * 2)
    a = ap.parse_args()
    os.sched_setaffinity(0, {0})
    targets = [t.split("=", 2) for t in a.targets]
    res: dict = {}
    for _name, url, _pid in targets:
        wrk(url, 16, 2, a.auth)  # warm-up
    for _ in range(a.rounds):
        for c in a.c:
            for name, url, pid in targets:
                c0 = proctree.snap(int(pid))["cpu_s"]
                j = wrk(url, c, a.duration, a.auth)
                c1 = proctree.snap(int(pid))["cpu_s"]
                j["cpu_ms"] = (c1 - c0) * 1000 / max(j["requests"], 1)
                res.setdefault((c, name), []).append(j)
    for (c, name), runs in res.items():
        m = {
            k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "cpu_ms")
        }
        errs = sum(
            r["err_status"] + r["err_read"] + r["err_connect"] + r["err_timeout"] for r in runs
        )
        print(
            f"c={c:<3} {name:12s} {m['rps']:8.0f} req/s  p50 {m['p50_ms']:6.2f}  p99 {m['p99_ms']:6.2f}"
            f"  cpu {m['cpu_ms']:.3f} ms/req  errors {errs}"
        )
        print("COMPAREJSON " + json.dumps({"c": c, "name": name, **m, "errors": errs}))


if __name__ == "__main__":
    main()
