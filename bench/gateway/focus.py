"""A short, focused A/B harness for the gateway's CPU per request (decision 0015).

Starts the mock upstream and Tallygate (SQLite and/or PostgreSQL) the way run.py does, warms
up, then runs wrk (non-streaming) or loadgen.py (streaming) at the given concurrencies and
prints, per cell: req/s, p50, gateway CPU per request (process and per thread, from /proc),
context switches per request, PostgreSQL backend CPU per request, and the billing checks
(reconcile, receipts = upstream = ok).

    .venv/bin/python bench/gateway/focus.py --targets sqlite,pg --modes nonstream --c 1,16 -d 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402


def threads(pid: int) -> dict[int, tuple[str, float, int]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            name = "main" if int(tid) == pid else f"t{tid}"
            cpu = run.proc_cpu_task(pid, int(tid))
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            switches = sum(
                int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
            )
            out[int(tid)] = (name, cpu, switches)
    return out


def measure(t: run.Target, mode: str, c: int, duration: float) -> dict[str, Any]:
    assert t.pid is not None
    before = threads(t.pid)
    j = run.cell(t, mode, c, duration)
    after = threads(t.pid)
    n = max(j["ok"], 1)
    per: Counter[str] = Counter()
    sw = 0
    for tid, (name, cpu, switches) in after.items():
        b = before.get(tid, (name, 0.0, 0))
        per[name] += (cpu - b[1]) * 1e6 / n
        sw += switches - b[2]
        if switches - b[2]:
            per[name + " sw"] += (switches - b[2]) / n
    j["threads_us"] = {k: round(v, 1) for k, v in per.most_common() if v >= 0.1}
    j["switches_per_req"] = sw / n
    return j


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="sqlite,pg")
    ap.add_argument("--modes", default="nonstream")
    ap.add_argument("--c", default="1,16")
    ap.add_argument("-d", "--duration", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument(
        "--rev-paths",
        help="for TARGET@REV: HEAD's tree with only these comma-separated paths from REV "
        "(when REV's migrations no longer match the database that seed.py creates)",
    )
    ap.add_argument("--pyspy", help="also write py-spy collapsed stacks (c=first) to this file")
    args = ap.parse_args()
    os.sched_setaffinity(0, {run.HARNESS_CPU})

    def _terminate(signum: int, _frame: Any) -> None:  # clean up (a background job ignores ^C)
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-focus-"))
    procs = []
    targets: list[run.Target] = []
    pg_dbs: list[str] = []
    worktrees: list[Path] = []
    try:
        procs.append(run.start_mock(tmp))
        for i, spec in enumerate(args.targets.split(",")):
            # "sqlite" / "pg": this checkout; "sqlite@REV" / "pg@REV": the code of commit REV
            # (a git worktree under the temporary directory), for an interleaved A/B.
            name, _, rev = spec.partition("@")
            env_before = os.environ.get("PYTHONPATH")
            if rev:
                tree = tmp / f"rev-{i}"
                at = "HEAD" if args.rev_paths else rev
                subprocess.run(
                    ["git", "-C", str(run.ROOT), "worktree", "add", "--detach", str(tree), at],
                    check=True,
                    capture_output=True,
                )
                if args.rev_paths:  # HEAD, with only these paths as they were at REV
                    subprocess.run(
                        ["git", "-C", str(tree), "checkout", rev, "--", *args.rev_paths.split(",")],
                        check=True,
                        capture_output=True,
                    )
                worktrees.append(tree)
                os.environ["PYTHONPATH"] = str(tree / "src")
            label = f"tallygate-{name}" + (f"@{rev}" if rev else "")
            try:
                if name == "sqlite":
                    db = f"sqlite:///{tmp / f'f{i}.db'}"
                    targets.append(run.start_tallygate(label, run.SQLITE_PORT + i, db, "", tmp))
                elif name == "pg":
                    url, db_name = run.make_pg_db()
                    pg_dbs.append(db_name)
                    targets.append(run.start_tallygate(label, run.PG_PORT + i, url, db_name, tmp))
            finally:
                if env_before is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = env_before
        for t in targets:
            run.load(t, "nonstream", 16, 2)
            run.load(t, "stream", 4, 1)
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
        for _ in range(args.runs):
            for mode in args.modes.split(","):
                for c in map(int, args.c.split(",")):
                    for t in targets:
                        j = measure(t, mode, c, args.duration)
                        ok = j["reconcile_rc"] == 0 and j["receipts_ok"]
                        pg = f" pg {j['pg_cpu_ms']:.3f}" if "pg_cpu_ms" in j else ""
                        print(
                            f"{mode:9s} c={c:<3d} {t.name:24s} {j['rps']:7.0f} req/s "
                            f"p50 {j['p50_ms']:6.2f} p99 {j['p99_ms']:6.2f} cpu {j['gw_cpu_ms']:.3f} ms{pg} "
                            f"sw/req {j['switches_per_req']:.1f} "
                            f"{'ok' if ok else 'BILLING CHECK FAILED'} {j['threads_us']}",
                            flush=True,
                        )
        if args.pyspy:
            c = int(args.c.split(",")[0])
            mode = args.modes.split(",")[0]
            for t in targets:
                out = f"{args.pyspy}.{t.name}.txt"
                spy = subprocess.Popen(
                    [run.ensure_pyspy(), "record", "--format", "raw", "--rate", "250"]
                    + ["--threads", "--nonblocking", "--idle", "-o", out, "-p", str(t.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
                run.load(t, mode, c, args.duration)
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
                print(f"py-spy stacks: {out}")
        print(f"load {os.getloadavg()[0]:.1f}")
    finally:
        for t in targets:
            run.stop(t.proc)
        for p in procs:
            run.stop(p)
        for db_name in pg_dbs:
            run.drop_pg_db(db_name)
        for tree in worktrees:
            subprocess.run(
                ["git", "-C", str(run.ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )


if __name__ == "__main__":
    main()
