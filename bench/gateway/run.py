"""Gateway benchmark: direct vs Tallygate (billing on, SQLite and PostgreSQL) vs LiteLLM's proxy.

One script, this machine, all on loopback. It starts the fast mock upstream
(``mock_upstream.py``), then four targets in front of it:

  direct              the load generator talks to the mock itself
  tallygate-sqlite    ``tallygate serve``, billing on, a fresh SQLite file (WAL)
  tallygate-pg        ``tallygate serve``, billing on, a throwaway PostgreSQL database
  litellm             LiteLLM's proxy (``litellm[proxy]`` in its own venv under /tmp), 1 worker,
                      no database, the settings of ../shared/bench/peer/run_litellm.sh

and runs the same load against each: non-streaming (wrk, closed loop, one thread) and streaming
(``stream: true`` + ``stream_options.include_usage``, 11 data events per stream; ``loadgen.py``)
at concurrency 1, 16 and 64, ``--runs`` times (rounds interleave the targets, so a noisy
neighbour hits all of them alike); the tables show medians. Gateways are pinned to CPU 1, the
harness, the mock and the PostgreSQL backends of the benchmark database to CPU 0.

After every Tallygate run: ``tallygate reconcile`` must exit 0, no receipt may be anything but
``ok``, the receipts written equal the upstream calls the mock answered, and equal the client's
successful requests (streaming: exactly — the client stops gracefully; wrk cannot, so the up to
``c`` requests it abandons at its deadline are served and billed by the gateway without being
counted by wrk: 0 ≤ receipts − successes ≤ c).

Then it profiles Tallygate (SQLite, non-streaming, c=16) with py-spy and writes the profile's
top frames to ``--out``. Writes the "## Gateway" section of docs/benchmarks.md unless
``--no-write``.

    .venv/bin/python bench/gateway/run.py            # full: 3 runs × 8 s per cell, ~16 min
    .venv/bin/python bench/gateway/run.py --quick    # 3 runs × 2 s per cell, ~5 min

Needs: wrk (``apt-get install -y wrk``), PostgreSQL on 127.0.0.1:5432 (user postgres, trust),
``/tmp/litellm-venv`` (created with ``pip install 'litellm[proxy]'`` when missing) and py-spy
(``/tmp/bench-tools/bin/py-spy``; created when missing; ``--no-profile`` skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import proctree  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
TALLYGATE = str(ROOT / ".venv" / "bin" / "tallygate")
LITELLM_VENV = Path(os.environ.get("LITELLM_VENV", "/tmp/litellm-venv"))
TOOLS_VENV = Path(os.environ.get("BENCH_TOOLS_VENV", "/tmp/bench-tools"))
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
HARNESS_CPU, GATEWAY_CPU = 0, 1
MOCK_PORT, SQLITE_PORT, PG_PORT, LITELLM_PORT, FLOOR_PORT = 9101, 9201, 9202, 9301, 9401
KEY = "tg-bench-" + "0123456789abcdef" * 2
LITELLM_KEY = "sk-bench-1234"
SECRET = "bench-secret-key-not-for-production"
CONCURRENCY = (1, 16, 64)
MODES = ("nonstream", "stream")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def http_get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return bytes(r.read())


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, limit: float, what: str) -> None:
    t0 = time.monotonic()
    while True:
        try:
            http_get(url)
            return
        except Exception:  # noqa: BLE001 - not up yet
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"{what} exited with {proc.returncode} while starting") from None
            if time.monotonic() - t0 > limit:
                raise SystemExit(f"{what} not healthy after {limit:.0f}s") from None
            time.sleep(0.2)


def smoke(base: str, auth: str) -> None:
    """One real chat request through the target: proves routing to the mock works."""
    body = json.dumps(
        {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    ).encode()
    req = urllib.request.Request(  # noqa: S310 - loopback only
        base + "/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {auth}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        assert r.status == 200, r.status
        r.read()


def proc_cpu(pid: int) -> float:
    return proctree.cpu_s(pid)


def pin(pid: int, cpu: int) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, {cpu})


# ---- targets ---------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    auth: str = ""
    proc: subprocess.Popen[bytes] | None = None
    db_url: str = ""
    pg_db: str = ""
    idle_rss_mb: float = 0.0
    start_s: float = 0.0
    version: str = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def tallygate(self) -> bool:
        return self.name.startswith("tallygate")

    # receipts and PostgreSQL backends (Tallygate only)
    def receipts(self) -> Counter[str]:
        if self.db_url.startswith("sqlite"):
            conn = sqlite3.connect(f"file:{self.db_url[len('sqlite:///') :]}?mode=ro", uri=True)
            try:
                rows = conn.execute(
                    "SELECT status, count(*) FROM receipts GROUP BY status"
                ).fetchall()
            finally:
                conn.close()
        else:
            with psycopg.connect(
                f"host=127.0.0.1 port=5432 user=postgres dbname={self.pg_db}"
            ) as c:
                rows = c.execute("SELECT status, count(*) FROM receipts GROUP BY status").fetchall()
        return Counter({str(s): int(n) for s, n in rows})

    def pg_backends(self) -> list[int]:
        if not self.pg_db:
            return []
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            rows = c.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.pg_db,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def reconcile(self) -> int:
        env = dict(
            os.environ,
            TALLYGATE_DATABASE_URL=self.db_url,
            TALLYGATE_LOG_LEVEL="WARNING",
            TALLYGATE_SECRET_KEY=SECRET,
        )
        r = subprocess.run([TALLYGATE, "reconcile"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"reconcile {self.name} exit {r.returncode}: {r.stdout[-500:]} {r.stderr[-500:]}")
        return r.returncode


def start_mock(tmp: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(HARNESS_CPU),
            PY,
            str(HERE / "mock_upstream.py"),
            "--port",
            str(MOCK_PORT),
        ],
        stdout=open(tmp / "mock.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{MOCK_PORT}/health", proc, 20, "mock upstream")
    return proc


def mock_chats() -> int:
    return int(json.loads(http_get(f"http://127.0.0.1:{MOCK_PORT}/stats"))["chat"])


def start_tallygate(name: str, port: int, db_url: str, pg_db: str, tmp: Path) -> Target:
    env = dict(
        os.environ,
        TALLYGATE_DATABASE_URL=db_url,
        TALLYGATE_LOG_LEVEL="WARNING",
        TALLYGATE_SECRET_KEY=SECRET,
    )
    subprocess.run(
        [PY, str(HERE / "seed.py"), db_url, f"http://127.0.0.1:{MOCK_PORT}/v1", KEY],
        env=env,
        check=True,
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(GATEWAY_CPU),
            TALLYGATE,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=open(tmp / f"{name}.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc, 60, name)
    t = Target(name, url, KEY, proc, db_url, pg_db, start_s=time.monotonic() - t0)
    smoke(url, KEY)
    return t


def ensure_litellm() -> str:
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        log(f"installing litellm[proxy] into {LITELLM_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True
        )
    out = subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "show", "litellm"], capture_output=True, text=True
    ).stdout
    return next((ln.split()[1] for ln in out.splitlines() if ln.startswith("Version")), "?")


def start_litellm(tmp: Path) -> Target:
    version = ensure_litellm()
    cfg = tmp / "litellm_config.yaml"
    cfg.write_text(
        f"""model_list:
  - model_name: mock-model
    litellm_params:
      model: openai/mock-model
      api_base: http://127.0.0.1:{MOCK_PORT}/v1
      api_key: sk-mock-upstream
litellm_settings:
  callbacks: []
  success_callback: []
  failure_callback: []
  num_retries: 0
  request_timeout: 30
  set_verbose: false
  drop_params: true
general_settings:
  master_key: {LITELLM_KEY}
"""
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL")
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_MODE="PRODUCTION",
        DISABLE_ADMIN_UI="True",
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(GATEWAY_CPU),
            str(LITELLM_VENV / "bin" / "litellm"),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(LITELLM_PORT),
            "--num_workers",
            "1",
        ],
        env=env,
        stdout=open(tmp / "litellm.log", "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{LITELLM_PORT}"
    wait_http(url + "/health/liveliness", proc, 180, "litellm")
    t = Target("litellm", url, LITELLM_KEY, proc, start_s=time.monotonic() - t0, version=version)
    smoke(url, LITELLM_KEY)
    return t


def start_floor(tmp: Path) -> Target:
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(GATEWAY_CPU),
            PY,
            str(HERE / "floor_proxy.py"),
            "--port",
            str(FLOOR_PORT),
            "--upstream",
            f"http://127.0.0.1:{MOCK_PORT}",
        ],
        stdout=open(tmp / "floor.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{FLOOR_PORT}"
    wait_http(url + "/health", proc, 30, "floor proxy")
    t = Target("floor", url, "", proc, start_s=time.monotonic() - t0)
    smoke(url, "x")
    return t


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM) if os.getpgid(
            proc.pid
        ) == proc.pid else proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if os.getpgid(proc.pid) == proc.pid else proc.kill()
        proc.wait(5)


def make_pg_db() -> tuple[str, str]:
    name = f"tg_gwbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def drop_pg_db(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- load ------------------------------------------------------------------------------------


def load(t: Target, mode: str, c: int, duration: float) -> dict[str, Any]:
    if mode == "nonstream":
        env = dict(os.environ, BENCH_AUTH=t.auth, BENCH_MODEL="mock-model")
        out = subprocess.run(
            [
                "taskset",
                "-c",
                str(HARNESS_CPU),
                "wrk",
                "-t1",
                f"-c{c}",
                f"-d{duration:g}s",
                "--timeout",
                "30s",
                "-s",
                str(HERE / "lua" / "chat.lua"),
                t.url,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
        j = json.loads(line[len("WRKJSON ") :])
        j["errors"] = sum(
            j[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")
        )
        j["ok"] = j["requests"] - j["err_status"]
        return j
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(HARNESS_CPU),
            PY,
            str(HERE / "loadgen.py"),
            "--url",
            t.url,
            "--auth",
            t.auth,
            "-c",
            str(c),
            "-d",
            str(duration),
            "--stream",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("LGJSON "))
    j = json.loads(line[len("LGJSON ") :])
    j["ok"] = j["requests"]
    return j


def cell(t: Target, mode: str, c: int, duration: float) -> dict[str, Any]:
    """One measured run against one target, with the billing checks for Tallygate."""
    backends: list[int] = []
    pg0: dict[int, float] = {}
    if t.tallygate:
        rec0, up0 = t.receipts(), mock_chats()
        backends = t.pg_backends()
        for p in backends:
            pin(p, HARNESS_CPU)
            pg0[p] = proc_cpu(p)
    cpu0 = proctree.snap(t.pid)["cpu_s"] if t.pid else 0.0
    j = load(t, mode, c, duration)
    if t.tallygate:
        # Requests that wrk abandoned at its deadline are still served and billed: wait until
        # every upstream call has its receipt (and the counts stop moving), at most 15 s.
        deadline, last = time.monotonic() + 15, (-1, -1)
        while time.monotonic() < deadline:
            now = (sum((t.receipts() - rec0).values()), mock_chats() - up0)
            if now == last and now[0] == now[1]:
                break
            last = now
            time.sleep(0.2)
    cpu1 = proctree.snap(t.pid)["cpu_s"] if t.pid else 0.0
    j.update(target=t.name, mode=mode, c=c)
    n = max(j["ok"], 1)
    if t.pid:
        j["gw_cpu_ms"] = (cpu1 - cpu0) * 1000 / n
    if t.tallygate:
        after = t.pg_backends()
        if t.pg_db:
            j["pg_cpu_ms"] = (
                sum(proc_cpu(p) - pg0.get(p, 0.0) for p in set(after) | set(backends)) * 1000 / n
            )
        rec1, up1 = t.receipts(), mock_chats()
        delta = rec1 - rec0
        receipts = sum(delta.values())
        upstream = up1 - up0
        j["receipts"], j["upstream_calls"] = receipts, upstream
        j["not_ok_receipts"] = receipts - delta.get("ok", 0)
        slack = c if mode == "nonstream" else 0
        j["receipts_ok"] = (
            j["not_ok_receipts"] == 0 and receipts == upstream and 0 <= receipts - j["ok"] <= slack
        )
        j["reconcile_rc"] = t.reconcile()
    return j


# ---- profile ---------------------------------------------------------------------------------


def ensure_pyspy() -> str:
    exe = TOOLS_VENV / "bin" / "py-spy"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run([str(TOOLS_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return str(exe)


def task_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of every thread of a process (utime + stime from /proc/PID/task/TID/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            out[int(tid)] = proc_cpu_task(pid, int(tid))
    return out


def proc_cpu_task(pid: int, tid: int) -> float:
    with open(f"/proc/{pid}/task/{tid}/stat") as fh:
        s = fh.read()
    fields = s[s.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / proctree.CLK


def profile(t: Target, out: Path, seconds: float) -> dict[str, Any]:
    """py-spy (all threads, 250 Hz; it pauses the process for each sample) on the SQLite gateway
    under wrk load at c=1 and c=16, plus the exact CPU of each thread from /proc."""
    exe = ensure_pyspy()
    result: dict[str, Any] = {}
    for c in (1, 16):
        raw = out / f"pyspy-sqlite-nonstream-c{c}.txt"
        spy = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(HARNESS_CPU),
                exe,
                "record",
                "--pid",
                str(t.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--threads",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(out / f"pyspy-c{c}.log", "wb"),
        )
        time.sleep(1.0)
        cpu0, tasks0 = proctree.snap(t.pid)["cpu_s"], task_cpu(t.pid)  # type: ignore[arg-type]
        j = load(t, "nonstream", c, seconds - 2)
        cpu1, tasks1 = proctree.snap(t.pid)["cpu_s"], task_cpu(t.pid)  # type: ignore[arg-type]
        spy.wait(60)
        stacks = parse_collapsed(raw)
        summary = summarize(stacks)
        n = max(j["ok"], 1)
        names = {}
        for frames, _ in stacks:
            if frames and frames[0].startswith("thread ("):
                tid = int(frames[0][len("thread (") :].split(")")[0])
                names[tid] = frames[0].split(": ", 1)[-1]
        summary["thread_cpu_us"] = {
            names.get(tid, f"tid {tid}"): round((tasks1[tid] - tasks0.get(tid, 0.0)) * 1e6 / n, 1)
            for tid in tasks1
            if tasks1[tid] - tasks0.get(tid, 0.0) > 0
        }
        summary.update(
            rps=j["rps"],
            p50_ms=j["p50_ms"],
            cpu_ms=(cpu1 - cpu0) * 1000 / n,
            c=c,
            seconds=seconds,
            requests=n,
        )
        result[f"c{c}"] = summary
    (out / "profile-summary.json").write_text(json.dumps(result, indent=1))
    return result


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"; keep the package for tallygate
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/src/" in path:
        path = path.split("/src/", 1)[1]
    elif "/lib/python" in path:
        path = "stdlib/" + path.rsplit("/", 1)[-1]
    return f"{name} ({path})"


IDLE_LEAVES = ("LedgerExecutor._loop", "Condition.wait", "SimpleQueue.get", "Thread.join")
LOOP_LEAF = "Runner.run"  # uvloop's run_forever: its C code (epoll, socket I/O) or idle polling

COMPONENTS = (
    # (component, test on the stack's frames, leaf first); first match wins
    (
        "ledger: hold (billing.begin)",
        lambda fs: any(f.startswith("begin (tallygate/billing/service") for f in fs),
    ),
    (
        "ledger: settle + receipt (billing.finish)",
        lambda fs: any(f.startswith("finish (tallygate/billing/service") for f in fs),
    ),
    ("ledger: BEGIN/COMMIT", lambda fs: any(f.startswith("LedgerExecutor._exec") for f in fs)),
    (
        "ledger: hand-off (queue, wake-ups, result delivery)",
        lambda fs: any(f.startswith(("LedgerExecutor.", "_resolve (")) for f in fs[:2]),
    ),
    (
        "upstream client (aiohttp)",
        lambda fs: any(x in fs[0] for x in ("aiohttp/", "yarl/", "multidict/")),
    ),
    ("HTTP server (uvicorn + httptools)", lambda fs: "uvicorn/" in fs[0]),
    (
        "ASGI middlewares (FastAPI/Starlette)",
        lambda fs: any(x in fs[0] for x in ("fastapi/", "starlette/", "opentelemetry")),
    ),
    (
        "asyncio (stdlib: tasks, futures, call_soon)",
        lambda fs: (
            "stdlib/" in fs[0]
            and any(
                x in fs[0]
                for x in ("tasks.py", "events.py", "futures.py", "base_events.py", "runners.py")
            )
        ),
    ),
    (
        "request id (secrets.token_hex)",
        lambda fs: any("secrets.py" in f or "random.py" in f for f in fs[:3]),
    ),
    ("gateway: token estimate (billing.tokens)", lambda fs: "tallygate/billing/tokens" in fs[0]),
    ("gateway: upstream body (proxy.upstream_body)", lambda fs: fs[0].startswith("upstream_body")),
    (
        "gateway: receipt object (Call.receipt)",
        lambda fs: any(f.startswith("Call.receipt") for f in fs[:3]),
    ),
    ("gateway: other handler code (auth, parse, route, answer)", lambda fs: "tallygate/" in fs[0]),
    ("other (stdlib, dataclass __init__, …)", lambda fs: True),
)


def summarize(stacks: list[tuple[list[str], int]]) -> dict[str, Any]:
    total = sum(n for _, n in stacks)
    self_t: Counter[tuple[str, str]] = Counter()
    comp: Counter[tuple[str, str]] = Counter()
    idle: Counter[str] = Counter()
    loop: Counter[str] = Counter()
    for frames, n in stacks:
        thread = frames[0].split(": ", 1)[-1] if frames and frames[0].startswith("thread") else ""
        body = [_short(f) for f in (frames[1:] if thread else frames)]
        if not body:
            continue
        leaf = body[-1]
        if leaf.startswith(IDLE_LEAVES):
            idle[thread] += n
            continue
        if leaf.startswith(LOOP_LEAF):
            loop[thread] += n
            continue
        self_t[(thread, leaf)] += n
        rev = body[::-1]
        for name, test in COMPONENTS:
            if test(rev):
                comp[(thread, name)] += n
                break
    return {
        "samples": total,
        "idle_samples": dict(idle),
        "loop_samples": dict(loop),
        "components": [(t, k, v) for (t, k), v in comp.most_common()],
        "self": [(t, k, v) for (t, k), v in self_t.most_common(40)],
    }


# ---- report ----------------------------------------------------------------------------------


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def aggregate(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["target"], r["mode"], r["c"])].append(r)
    agg = {}
    for k, rows in groups.items():
        a: dict[str, Any] = {"runs": len(rows)}
        for key in (
            "rps",
            "p50_ms",
            "p99_ms",
            "ttfb_p50_ms",
            "ttfb_p99_ms",
            "gw_cpu_ms",
            "pg_cpu_ms",
        ):
            a[key] = med(rows, key)
        a["errors"] = sum(r["errors"] for r in rows)
        a["requests"] = sum(r["ok"] for r in rows)
        if any("reconcile_rc" in r for r in rows):
            a["reconcile"] = (
                "0"
                if all(r["reconcile_rc"] == 0 for r in rows)
                else "FAIL " + ",".join(str(r["reconcile_rc"]) for r in rows)
            )
            a["receipts"] = sum(r["receipts"] for r in rows)
            a["upstream_calls"] = sum(r["upstream_calls"] for r in rows)
            a["receipts_ok"] = all(r["receipts_ok"] for r in rows)
            a["not_ok_receipts"] = sum(r["not_ok_receipts"] for r in rows)
        agg[k] = a
    return agg


def f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def render(
    agg: dict[tuple[str, str, int], dict[str, Any]],
    targets: list[Target],
    meta: dict[str, Any],
    prof: dict[str, Any] | None,
    micro: dict[str, float] | None = None,
) -> list[str]:
    names = [t.name for t in targets]
    by = {t.name: t for t in targets}
    out = ["## Gateway", ""]
    out += [
        f"`bench/gateway/run.py`{' --quick' if meta['quick'] else ''}, {meta['date']}. Median of "
        f"{meta['runs']} runs per cell ({meta['duration']:g} s each, rounds interleave the "
        "targets), after a warm-up per target. Billing is **on** for Tallygate: every request "
        "is a hold, an upstream call, a settlement and a receipt with its ledger entry.",
        "",
        "Overhead = the gateway's percentile minus direct's at the same concurrency (past "
        "saturation, c ≥ 16, it is mostly queueing ≈ c / throughput: read throughput and CPU "
        "there). gw CPU = utime+stime of the gateway's process tree during the run / successful "
        "requests; PG CPU = the same for the PostgreSQL backends serving the benchmark database. "
        "Checks (Tallygate, after every run): `tallygate reconcile` exit code, and receipts = "
        "upstream calls = successful requests (see Method).",
        "",
    ]
    for mode, title in (
        ("nonstream", "Non-streaming `POST /v1/chat/completions` (wrk)"),
        ("stream", "Streaming, 11 data events + `[DONE]` per stream (loadgen.py)"),
    ):
        out += [f"### {title}", ""]
        ttfb = mode == "stream"
        out.append(
            "| c | target | req/s | p50 ms | p99 ms | "
            + ("TTFB p50 ms | " if ttfb else "")
            + "overhead p50 / p99 ms | gw CPU ms/req | PG CPU ms/req | errors | reconcile | "
            "receipts = upstream = ok |"
        )
        out.append(
            "|---:|---|---:|---:|---:|" + ("---:|" if ttfb else "") + "---:|---:|---:|---:|---|---|"
        )
        for c in CONCURRENCY:
            d = agg.get(("direct", mode, c))
            for n in names:
                a = agg.get((n, mode, c))
                if a is None:
                    continue
                ov = "-"
                if n != "direct" and d:
                    ov = f"{a['p50_ms'] - d['p50_ms']:.2f} / {a['p99_ms'] - d['p99_ms']:.2f}"
                chk = "-"
                if "receipts" in a:
                    chk = ("yes" if a["receipts_ok"] else "**NO**") + (
                        f" ({a['receipts']:,} receipts, {a['upstream_calls']:,} upstream, "
                        f"{a['requests']:,} ok)"
                    )
                out.append(
                    f"| {c} | {n} | {a['rps']:,.0f} | {f(a['p50_ms'])} | {f(a['p99_ms'])} | "
                    + (f"{f(a['ttfb_p50_ms'])} | " if ttfb else "")
                    + f"{ov} | {f(a['gw_cpu_ms'], '{:.3f}')} | {f(a['pg_cpu_ms'], '{:.3f}')} | "
                    f"{a['errors']} | {a.get('reconcile', '-')} | {chk} |"
                )
        out.append("")
    # ratios and targets
    out += ["### Tallygate against LiteLLM (same run) and against the targets", ""]
    out.append("| mode | c | target | throughput × LiteLLM | CPU/req: LiteLLM ÷ Tallygate |")
    out.append("|---|---:|---|---:|---:|")
    for mode in MODES:
        for c in CONCURRENCY:
            lit = agg.get(("litellm", mode, c))
            for n in names:
                if not n.startswith("tallygate") or lit is None or (n, mode, c) not in agg:
                    continue
                a = agg[(n, mode, c)]
                out.append(
                    f"| {mode} | {c} | {n} | {a['rps'] / lit['rps']:.1f}× | "
                    f"{lit['gw_cpu_ms'] / a['gw_cpu_ms']:.1f}× |"
                )
    out.append("")
    out += targets_table(agg, by)
    out += ["### Memory and start-up", ""]
    out.append(
        "| target | processes | RSS idle after start, MB | peak RSS (VmHWM), MB | start to ready, s |"
    )
    out.append("|---|---:|---:|---:|---:|")
    for t in targets:
        if t.name == "direct":
            continue
        out.append(
            f"| {t.name} | {meta['nproc'].get(t.name, 1)} | {t.idle_rss_mb:.0f} | "
            f"{meta['peak'].get(t.name, 0):.0f} | {t.start_s:.1f} |"
        )
    out.append("")
    out += ["### Method", ""]
    out += [f"- {line}" for line in meta["method"]]
    out.append("")
    if prof:
        out += ["### Where the CPU goes (py-spy, tallygate-sqlite, non-streaming)", ""]
        out += [
            "CPU per request of each thread is exact (/proc). The rows under it split that "
            "thread's CPU in proportion to its py-spy samples (250 Hz, all threads), leaving out "
            "samples where the thread waits (queue, condition). `event loop (C) or idle poll` is "
            "uvloop's run_forever: its epoll and socket work in C *and* its idle waiting, which "
            "py-spy cannot tell apart, so at c=1 (a mostly idle loop) it takes a share that is "
            "not all CPU and the other rows are understated. On one core the two threads also "
            "preempt each other, so the rows are estimates; the thread totals are not. "
            "Interpretation and proposals: docs/decisions/0005-gateway-hot-path-costs.md.",
            "",
        ]
        keys = list(prof)
        out.append(
            "| thread / component | " + " | ".join(f"c={prof[k]['c']} µs/req" for k in keys) + " |"
        )
        out.append("|---|" + "---:|" * len(keys))
        rows: dict[tuple[str, str], list[str]] = {}
        threads: list[str] = []
        for i, k in enumerate(keys):
            p = prof[k]
            n = p["requests"]
            for th, us in p["thread_cpu_us"].items():
                if th not in threads:
                    threads.append(th)
                rows.setdefault((th, "**thread CPU (exact)**"), ["-"] * len(keys))[i] = (
                    f"**{us:.0f}**"
                )
            busy: Counter[str] = Counter(p["loop_samples"])
            for th, _name, v in p["components"]:
                busy[th] += v
            cpu = p["thread_cpu_us"]
            for th, v in p["loop_samples"].items():
                us = cpu.get(th, 0.0) * v / max(busy[th], 1)
                rows.setdefault((th, "event loop (C) or idle poll"), ["-"] * len(keys))[i] = (
                    f"{us:.0f}"
                )
            for th, name, v in p["components"]:
                us = cpu.get(th, 0.0) * v / max(busy[th], 1)
                rows.setdefault((th, name), ["-"] * len(keys))[i] = f"{us:.0f}"
        for th in threads:
            for (t2, name), cells in rows.items():
                if t2 == th and (name.startswith("**") or any(c not in ("-", "0") for c in cells)):
                    out.append(f"| {th} — {name} | " + " | ".join(cells) + " |")
        out.append(
            "| **process CPU per request (exact)** | "
            + " | ".join(f"**{prof[k]['cpu_ms'] * 1000:.0f}**" for k in keys)
            + " |"
        )
        out.append(
            "| req/s under py-spy | " + " | ".join(f"{prof[k]['rps']:,.0f}" for k in keys) + " |"
        )
        out.append("")
    if micro:
        out += [
            "### Parts in isolation (`bench/gateway/micro.py`, CPU µs per operation, median of 5)",
            "",
            "| part | µs |",
            "|---|---:|",
        ]
        out += [f"| {k} | {v:.1f} |" for k, v in micro.items()]
        out.append("")
    return out


def targets_table(
    agg: dict[tuple[str, str, int], dict[str, Any]], by: dict[str, Target]
) -> list[str]:
    def g(n: str, mode: str, c: int, k: str) -> float | None:
        a = agg.get((n, mode, c))
        return a.get(k) if a else None

    def over(n: str, mode: str, k: str) -> float | None:
        a, d = g(n, mode, 1, k), g("direct", mode, 1, k)
        return None if a is None or d is None else a - d

    def ratio(n: str) -> float | None:
        vals = []
        for mode in MODES:
            for c in (16, 64):
                a, lit = g(n, mode, c, "rps"), g("litellm", mode, c, "rps")
                if a and lit:
                    vals.append(a / lit)
        return min(vals) if vals else None

    def cpu(n: str, mode: str) -> float | None:
        vals = [g(n, mode, c, "gw_cpu_ms") for c in CONCURRENCY]
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    rows = []

    def row(what: str, target: str, value: float | None, fmt: str, ok: bool | None) -> None:
        rows.append(
            f"| {what} | {target} | {f(value, fmt)} | "
            f"{'-' if ok is None else ('met' if ok else '**missed**')} |"
        )

    if "tallygate-sqlite" in by:
        v = cpu("tallygate-sqlite", "nonstream")
        row(
            "gw CPU per billed non-streaming request, SQLite (worst c)",
            "≤ 0.5 ms",
            v,
            "{:.3f} ms",
            None if v is None else v <= 0.5,
        )
        v = g("tallygate-sqlite", "nonstream", 1, "gw_cpu_ms")
        row("… at c=1 (no batching)", "≤ 0.5 ms", v, "{:.3f} ms", None if v is None else v <= 0.5)
        v = (
            min(
                [
                    x
                    for x in (g("tallygate-sqlite", "nonstream", c, "gw_cpu_ms") for c in (16, 64))
                    if x
                ]
                or [0]
            )
            or None
        )
        row("… at c ≥ 16 (best)", "≤ 0.5 ms", v, "{:.3f} ms", None if v is None else v <= 0.5)
        v = cpu("tallygate-sqlite", "stream")
        row(
            "gw CPU per 11-chunk stream, SQLite (worst c)",
            "≤ 1.2 ms",
            v,
            "{:.3f} ms",
            None if v is None else v <= 1.2,
        )
        v = ratio("tallygate-sqlite")
        row(
            "throughput × LiteLLM, SQLite (lowest of c=16/64, both modes)",
            "≥ 20×",
            v,
            "{:.1f}×",
            None if v is None else v >= 20,
        )
        for k, lim in (("p50_ms", 1.0), ("p99_ms", 3.0)):
            v = over("tallygate-sqlite", "nonstream", k)
            row(
                f"added latency c=1 {k[:3]}, SQLite (non-streaming)",
                f"≤ {lim:g} ms",
                v,
                "{:.2f} ms",
                None if v is None else v <= lim,
            )
    if "tallygate-pg" in by:
        v = ratio("tallygate-pg")
        row(
            "throughput × LiteLLM, PostgreSQL (lowest of c=16/64, both modes)",
            "≥ 10×",
            v,
            "{:.1f}×",
            None if v is None else v >= 10,
        )
        for k, lim in (("p50_ms", 2.0), ("p99_ms", 5.0)):
            v = over("tallygate-pg", "nonstream", k)
            row(
                f"added latency c=1 {k[:3]}, PostgreSQL (non-streaming)",
                f"≤ {lim:g} ms",
                v,
                "{:.2f} ms",
                None if v is None else v <= lim,
            )
    for n in ("tallygate-sqlite", "tallygate-pg"):
        if n in by:
            row(
                f"RSS idle, {n}",
                "≤ 150 MB",
                by[n].idle_rss_mb,
                "{:.0f} MB",
                by[n].idle_rss_mb <= 150,
            )
    tg = [n for n in by if n.startswith("tallygate")]
    errs = sum(a["errors"] for k, a in agg.items() if k[0] in tg)
    rows.append(
        f"| failed requests, all Tallygate runs | 0 | {errs} | {'met' if errs == 0 else '**missed**'} |"
    )
    rec = all(
        a.get("reconcile") == "0" and a.get("receipts_ok") for k, a in agg.items() if k[0] in tg
    )
    rows.append(
        f"| reconcile clean + receipts = requests after every run | all | "
        f"{'all' if rec else 'not all'} | {'met' if rec else '**missed**'} |"
    )
    return ["| target (issue 3) | bar | measured | |", "|---|---|---:|---|", *rows, ""]


NOTES_OPEN, NOTES_CLOSE = "<!-- gateway-notes -->", "<!-- /gateway-notes -->"


def write_section(lines: list[str]) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nWritten by the scripts in `bench/`.\n\n"
    )
    start = text.find("\n## Gateway\n")
    start = 0 if text.startswith("## Gateway\n") else (start + 1 if start >= 0 else -1)
    section = "\n".join(lines).rstrip() + "\n"
    if start >= 0:  # replaced where it stands: the other sections keep their order
        end = text.find("\n## ", start + 5)
        old = text[start : end + 1 if end >= 0 else len(text)]
        a, b = old.find(NOTES_OPEN), old.find(NOTES_CLOSE)
        if 0 <= a < b:  # hand-written notes survive a new run, after its first paragraph
            notes = old[a : b + len(NOTES_CLOSE)]
            cut = section.find("\n\n", section.find("\n\n") + 2)
            if cut >= 0:
                section = section[: cut + 2] + notes + "\n\n" + section[cut + 2 :]
        text = text[:start] + section + ("\n" + text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)


# ---- main ------------------------------------------------------------------------------------


def pg_settings() -> str:
    with psycopg.connect(PG_ADMIN) as conn:
        vals = [
            conn.execute(f"SHOW {k}").fetchone()[0]
            for k in ("server_version", "synchronous_commit", "fsync", "wal_level")  # type: ignore[index]
        ]
    return (
        f"PostgreSQL {vals[0].split()[0]} (the machine's shared cluster), "
        f"synchronous_commit={vals[1]}, fsync={vals[2]}, wal_level={vals[3]}"
    )


def main() -> None:
    global CONCURRENCY
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 s per cell instead of 8")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--targets", default="direct,floor,tallygate-sqlite,tallygate-pg,litellm")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--concurrency", default="1,16,64", help="a subset, e.g. 1,16")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-seconds", type=float, default=15)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", help="directory for raw results (default: a new one under /tmp)")
    args = ap.parse_args()
    CONCURRENCY = tuple(int(c) for c in args.concurrency.split(","))
    duration = args.duration or (2.0 if args.quick else 8.0)
    wanted = args.targets.split(",")
    modes = args.modes.split(",")
    os.sched_setaffinity(0, {HARNESS_CPU})

    def _terminate(signum: int, _frame: Any) -> None:  # stop what we started, then exit
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        raise SystemExit("needs 2 CPUs (gateway on CPU 1, harness on CPU 0)")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get update && apt-get install -y wrk")
    out = Path(args.out or tempfile.mkdtemp(prefix="tallygate-gwbench-"))
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-gwbench-state-"))
    log(f"raw results in {out}; load {os.getloadavg()}")
    procs: list[subprocess.Popen[bytes]] = []
    targets: list[Target] = []
    pg_db = ""
    results: list[dict[str, Any]] = []
    loads: list[float] = []
    try:
        mock = start_mock(tmp)
        procs.append(mock)
        if "direct" in wanted:
            targets.append(Target("direct", f"http://127.0.0.1:{MOCK_PORT}"))
        if "tallygate-sqlite" in wanted:
            targets.append(
                start_tallygate(
                    "tallygate-sqlite", SQLITE_PORT, f"sqlite:///{tmp / 'bench.db'}", "", tmp
                )
            )
        if "tallygate-pg" in wanted:
            url, pg_db = make_pg_db()
            targets.append(start_tallygate("tallygate-pg", PG_PORT, url, pg_db, tmp))
        if "floor" in wanted:
            targets.append(start_floor(tmp))
        if "litellm" in wanted:
            targets.append(start_litellm(tmp))
        for t in targets:
            if t.pid:
                # idle: after start-up and one smoke request, before any load
                t.idle_rss_mb = proctree.snap(t.pid)["rss_mb"]
        for t in targets:  # warm-up: connection pools, lazy imports, caches
            log(f"warm-up {t.name}")
            load(t, "nonstream", 16, 3 if not args.quick else 1)
            load(t, "stream", 4, 1)
        for r in range(args.runs):
            loads.append(os.getloadavg()[0])
            for mode in modes:
                for c in CONCURRENCY:
                    for t in targets:
                        j = cell(t, mode, c, duration)
                        j["round"] = r
                        results.append(j)
                        with open(out / "results.jsonl", "a") as fh:
                            fh.write(json.dumps(j) + "\n")
                        log(
                            f"run {r + 1} {mode} c={c} {t.name}: {j['rps']:.0f} req/s p50 "
                            f"{j['p50_ms']:.2f} p99 {j['p99_ms']:.2f} cpu "
                            f"{j.get('gw_cpu_ms', 0):.3f} ms errors {j['errors']}"
                            + (
                                f" reconcile {j['reconcile_rc']} receipts {j['receipts']} "
                                f"upstream {j['upstream_calls']} ok {j['ok']}"
                                if t.tallygate
                                else ""
                            )
                        )
        loads.append(os.getloadavg()[0])
        peak = {t.name: proctree.snap(t.pid)["hwm_mb"] for t in targets if t.pid}
        nproc = {t.name: proctree.snap(t.pid)["nproc"] for t in targets if t.pid}
        prof = None
        sq = next((t for t in targets if t.name == "tallygate-sqlite"), None)
        if sq is not None and not args.no_profile:
            log("profiling tallygate-sqlite with py-spy")
            prof = profile(sq, out, args.profile_seconds)
            rc = sq.reconcile()
            log(
                f"profile: c1 {prof['c1']['rps']:.0f} req/s, c16 {prof['c16']['rps']:.0f} req/s, "
                f"reconcile {rc}"
            )
        sqlite_note = ""
        if sq is not None:
            conn = sqlite3.connect(f"file:{tmp / 'bench.db'}?mode=ro", uri=True)
            jm = conn.execute("PRAGMA journal_mode").fetchone()[0]
            conn.close()
            sqlite_note = (
                f"SQLite {sqlite3.sqlite_version}, journal_mode={jm}, synchronous=NORMAL "
                "(set by tallygate.db.engine on every connection), file on local disk"
            )
    finally:
        for t in targets:
            stop(t.proc)
        for p in procs:
            stop(p)
        if pg_db:
            with contextlib.suppress(Exception):
                drop_pg_db(pg_db)
    micro = None
    if not args.no_profile:
        log("micro.py: parts of the hot path in isolation")
        mo = subprocess.run([PY, str(HERE / "micro.py")], capture_output=True, text=True)
        line = next((ln for ln in mo.stdout.splitlines() if ln.startswith("MICROJSON ")), "")
        micro = json.loads(line[len("MICROJSON ") :]) if line else None
        (out / "micro.txt").write_text(mo.stdout + mo.stderr)
    agg = aggregate(results)
    lit = next((t for t in targets if t.name == "litellm"), None)
    wrk_ver = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1:2]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": args.quick,
        "runs": args.runs,
        "duration": duration,
        "peak": peak,
        "nproc": nproc,
        "method": [
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} vCPU "
            f"({_cpu_model()}), Linux {platform.release()}, Python {platform.python_version()}.",
            "Pinning: every gateway runs with `taskset -c 1`; this script, wrk, loadgen.py, the "
            "mock upstream and `tallygate reconcile` run on CPU 0 (`sched_setaffinity`). The "
            "PostgreSQL backends that serve the benchmark database (from `pg_stat_activity`) are "
            "pinned to CPU 0 with `sched_setaffinity` before every run; they exit with the "
            "gateway, so there is nothing to restore. The postmaster, walwriter and checkpointer "
            "of the shared cluster are left alone (other work on this machine uses them); their "
            "CPU is not in the PG CPU column.",
            f"Load: wrk {''.join(wrk_ver)} (`-t1 -cC`, closed loop, `lua/chat.lua`: "
            "`max_tokens: 32`, one short user message) for non-streaming; `loadgen.py` "
            "(aiohttp + uvloop, one keep-alive connection per worker, closed loop) for streaming, "
            "`stream: true`, `stream_options.include_usage: true`; a stream counts only with 200, "
            "11 data events (role, 8 content, finish, usage) and `[DONE]`. Concurrency "
            f"{', '.join(map(str, CONCURRENCY))}; {args.runs} rounds × {duration:g} s per cell; "
            "each round runs every target at each cell in turn; table values are medians over "
            "rounds. Warm-up per target before the first round.",
            f"Code: Tallygate at commit {_git_rev()}.",
            "Mock upstream: `bench/gateway/mock_upstream.py` (raw asyncio + httptools + uvloop, "
            "zero latency), the company harness's mock plus a `/stats` counter.",
            "Tallygate: `tallygate serve` (uvicorn, uvloop, httptools, no access log, one process), "
            "`TALLYGATE_LOG_LEVEL=WARNING`, database seeded before start by `seed.py` (one user, "
            "one key, `mock-model` on the routed route with a price, one channel). "
            f"Durability: {sqlite_note}; {pg_settings()}.",
            "Billing checks: after each Tallygate run the receipts written during the run (SQL "
            "count by status) must all be `ok`, equal the chat completions the mock answered, and "
            "equal the client's successful requests — exactly for streaming (loadgen stops "
            "gracefully); for wrk, which abandons up to c in-flight requests at its deadline "
            "(they are still served and billed; the script waits until every upstream call has its receipt), "
            "0 ≤ receipts − successes ≤ c. Then `tallygate reconcile` on that database.",
            f"LiteLLM {lit.version if lit else '-'} (`litellm[proxy]` in /tmp/litellm-venv), 1 worker, "
            "no database, no Redis; config `callbacks: []`, `num_retries: 0`, master key; env "
            "`LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR LITELLM_MODE=PRODUCTION "
            "DISABLE_ADMIN_UI=True` (as ../shared/bench/peer/run_litellm.sh). LiteLLM does no "
            "billing here; Tallygate bills every request.",
            "Memory: RSS summed over the gateway's process tree right after start-up and one smoke "
            "request (idle), and the kernel's VmHWM after all runs (peak).",
            f"Machine load (1-min average) at the start of each round and at the end: "
            f"{', '.join(f'{x:.1f}' for x in loads)} — other engineers' test suites share this "
            "box, so absolute numbers are noisy; ratios within one run are the robust part.",
        ],
    }
    (out / "aggregate.json").write_text(
        json.dumps({"|".join(map(str, k)): v for k, v in agg.items()}, indent=1)
    )
    lines = render(agg, targets, meta, prof, micro)
    (out / "section.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if not args.no_write:
        write_section(lines)
    bad = any(a["errors"] for a in agg.values()) or any(
        a.get("reconcile", "0") != "0" or a.get("receipts_ok") is False for a in agg.values()
    )
    if bad:
        log("FAILED: errors, reconcile or receipt checks did not pass (see the table)")
        sys.exit(1)


def _git_rev() -> str:
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return rev + (" (plus uncommitted changes in src/ by other work in progress)" if dirty else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    main()
