"""What the parts of Tallygate's non-streaming hot path cost in isolation (CPU µs per request),
to put numbers on the profile in docs/decisions/0005-gateway-hot-path-costs.md.

Each item is measured in this process (pinned to one CPU) as CPU time per operation, median of
``--repeat`` runs:

  ledger-inline        billing.begin and billing.finish (hold; settle + receipt) on SQLite, each
                       in its own BEGIN IMMEDIATE … COMMIT, called directly on one raw connection
  ledger-executor-c1   the same two calls through LedgerExecutor.call from an asyncio loop, one
                       request at a time (what a lone request pays: two thread hand-offs each way)
  ledger-executor-c16  the same with 16 requests in flight (group commit shares transactions)
  asgi-stack           uvicorn's ProxyHeadersMiddleware + FastAPI/Starlette's middleware stack +
                       GatewayMiddleware in front of a trivial /v1 handler, minus the trivial
                       handler called directly (the price of mounting /v1 as a middleware)
  aiohttp-call         one upstream POST + read through an aiohttp ClientSession like
                       upstream.client.make_session (the mock upstream answers; its CPU is not ours)
  raw-httptools-call   the same POST with a minimal asyncio Protocol + httptools client
  request-id           secrets.token_hex(12) (a getrandom syscall) vs a per-process counter
  get-running-loop     asyncio.get_running_loop() (a getpid syscall on CPython 3.11)

    .venv/bin/python bench/gateway/micro.py [--mock http://127.0.0.1:9101]   # starts a mock itself
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

os.environ.setdefault("TALLYGATE_SECRET_KEY", "bench-secret-key-not-for-production")

from tallygate.billing import service as billing  # noqa: E402
from tallygate.billing.receipts import Receipt  # noqa: E402
from tallygate.db.engine import Database  # noqa: E402
from tallygate.ledger import Ledger  # noqa: E402
from tallygate.ledger.executor import LedgerExecutor  # noqa: E402
from tallygate.ledger.tx import Tx  # noqa: E402

KEY = "tg-bench-" + "0123456789abcdef" * 2


def cpu_per_op(fn: Any, n: int, repeat: int) -> float:
    vals = []
    for _ in range(repeat):
        c0 = time.process_time()
        fn(n)
        vals.append((time.process_time() - c0) / n * 1e6)
    return statistics.median(vals)


class LedgerBench:
    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.ledger = Ledger({"credit": "USD", "routed": "CNY"})
        self.seq = itertools.count()
        self.tag = secrets.token_hex(3)

    def _receipt(self, rid: str) -> Receipt:
        return Receipt(
            request_id=rid,
            created_at=self.ledger.now_us(),
            user_id=1,
            endpoint="chat",
            key_id=1,
            key_label="bench",
            model="mock-model",
            api_model_id="mock-model",
            upstream_model="mock-model",
            route_type="routed",
            bucket="routed",
            currency="CNY",
            primary_channel="Mock",
            channel="Mock",
            attempts_json="[]",
            input_tokens=12,
            output_tokens=14,
            usage_basis="upstream",
            price_version_id=1,
            input_per_m_nanos=10**9,
            output_per_m_nanos=2 * 10**9,
            cached_input_per_m_nanos=5 * 10**8,
            hold_nanos=100_000,
            charge_policy="completed:charge_usage",
            channel_id=1,
        )

    def _begin_kw(self, rid: str) -> dict[str, Any]:
        return dict(
            request_id=rid,
            user_id=1,
            bucket="routed",
            amount=100_000,
            key_id=1,
            idem_key=None,
            request_hash="",
            now_us=self.ledger.now_us(),
        )

    def inline(self, n: int) -> None:
        pooled = self.db.engine.raw_connection()
        raw = pooled.driver_connection
        pg = not self.db.sqlite
        if pg:
            raw.autocommit = True
        tx = Tx(raw, postgres=pg)
        begin = "BEGIN" if pg else "BEGIN IMMEDIATE"
        for _ in range(n):
            rid = f"m{self.tag}-{next(self.seq)}"
            tx.run(begin)
            billing.begin(tx, self.ledger, **self._begin_kw(rid))
            tx.run("COMMIT")
            tx.run(begin)
            billing.finish(tx, self.ledger, receipt=self._receipt(rid), charge=40_000)
            tx.run("COMMIT")
        pooled.close()

    def executor(self, n: int, width: int) -> None:
        ex = LedgerExecutor(self.db.engine)

        async def one(i: int) -> None:
            for _ in range(i, n, width):
                rid = f"m{self.tag}-{next(self.seq)}"
                await ex.call(billing.begin, self.ledger, **self._begin_kw(rid))
                await ex.call(
                    billing.finish, self.ledger, receipt=self._receipt(rid), charge=40_000
                )

        async def main() -> None:
            await asyncio.gather(*(one(i) for i in range(width)))

        asyncio.run(main())
        ex.close()


def asgi_stack(n: int) -> tuple[float, float]:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from tallygate.app import create_app
    from tallygate.config import Settings
    from tallygate.gateway import handler

    async def trivial(rt: Any, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    real = handler.handle
    handler.handle = trivial  # type: ignore[assignment]
    fastapi_app = create_app(Settings(database_url="sqlite://"))
    fastapi_app.state.gateway = None  # the trivial handler needs no runtime
    app = ProxyHeadersMiddleware(fastapi_app, "127.0.0.1")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"x")],
        "client": ("127.0.0.1", 5),
        "server": ("127.0.0.1", 80),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: Any) -> None:
        return None

    async def through(k: int) -> None:
        for _ in range(k):
            await app(dict(scope), receive, send)

    async def direct(k: int) -> None:
        for _ in range(k):
            await trivial(None, dict(scope), receive, send)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(through(1000))
        a = cpu_per_op(lambda k: loop.run_until_complete(through(k)), n, 5)
        b = cpu_per_op(lambda k: loop.run_until_complete(direct(k)), n, 5)
    finally:
        loop.close()
        handler.handle = real  # type: ignore[assignment]
    return a, b


def aiohttp_call(base: str, n: int) -> float:
    import uvloop

    from tallygate.upstream.client import make_session

    body = json.dumps(
        {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32}
    ).encode()

    async def main() -> float:
        s = make_session()
        url = base + "/v1/chat/completions"
        hdr = {"content-type": "application/json", "authorization": "Bearer sk-x"}

        async def k(m: int) -> None:
            for _ in range(m):
                r = await s.post(url, data=body, headers=hdr)
                await r.read()

        await k(500)
        vals = []
        for _ in range(5):
            c0 = time.process_time()
            await k(n)
            vals.append((time.process_time() - c0) / n * 1e6)
        await s.close()
        return statistics.median(vals)

    return uvloop.run(main())


def raw_call(base: str, n: int) -> float:
    """The same upstream POST over one keep-alive connection with a minimal client: an asyncio
    Protocol, the request written as bytes, httptools parsing the response (no pooling, no
    timeouts, no redirects, no cookies: what a specialised upstream client would keep)."""
    import httptools
    import uvloop

    host, port = base.split("//", 1)[1].split(":")
    body = json.dumps(
        {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32}
    ).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: "
        + host.encode()
        + b"\r\ncontent-type: application/json\r\nauthorization: Bearer sk-x\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.chunks: list[bytes] = []
            self.done: asyncio.Future[bytes] | None = None

        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, b: bytes) -> None:
            self.chunks.append(b)

        def on_message_complete(self) -> None:
            assert self.done is not None
            self.done.set_result(b"".join(self.chunks))
            self.chunks = []

        async def post(self) -> bytes:
            self.done = asyncio.get_running_loop().create_future()
            self.t.writelines((head, body))
            return await self.done

    async def main() -> float:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(Client, host, int(port))

        async def k(m: int) -> None:
            for _ in range(m):
                await client.post()

        await k(500)
        vals = []
        for _ in range(5):
            c0 = time.process_time()
            await k(n)
            vals.append((time.process_time() - c0) / n * 1e6)
        client.t.close()
        return statistics.median(vals)

    return uvloop.run(main())


def pg_roundtrips(n: int) -> dict[str, float]:
    """Wall µs per round trip to PostgreSQL (backend pinned to CPU 0, this process on CPU 1):
    SELECT 1; a one-row INSERT committed with synchronous_commit on / off; and three
    statements (BEGIN; SELECT 1; COMMIT) sent one by one vs in one psycopg pipeline."""
    import psycopg

    out: dict[str, float] = {}
    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
    ) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        os.sched_setaffinity(pid, {0})

        def wall(fn: Any, k: int) -> float:
            vals = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                vals.append((time.perf_counter() - t0) / k * 1e6)
            return statistics.median(vals)

        out["pg SELECT 1 round trip (wall)"] = wall(lambda: conn.execute("SELECT 1"), n)

        conn.execute("CREATE TABLE IF NOT EXISTS tg_micro_commit (x int)")
        conn.execute("TRUNCATE tg_micro_commit")

        def commit_real(sync: str) -> None:
            conn.execute("BEGIN")
            conn.execute(f"SET LOCAL synchronous_commit = {sync}")
            conn.execute("INSERT INTO tg_micro_commit VALUES (1)")
            conn.execute("COMMIT")

        out["pg BEGIN+SET+INSERT+COMMIT, sync on (wall)"] = wall(lambda: commit_real("on"), n // 4)
        out["pg BEGIN+SET+INSERT+COMMIT, sync off (wall)"] = wall(
            lambda: commit_real("off"), n // 4
        )

        def three() -> None:
            conn.execute("BEGIN")
            conn.execute("SELECT 1")
            conn.execute("COMMIT")

        def piped() -> None:
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute("SELECT 1")
                conn.execute("COMMIT")

        out["pg BEGIN;SELECT;COMMIT one by one (wall)"] = wall(three, n)
        out["pg BEGIN;SELECT;COMMIT pipelined (wall)"] = wall(piped, n)
        conn.execute("DROP TABLE tg_micro_commit")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mock", default="")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("-n", type=int, default=2000)
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    mock = None
    base = args.mock
    if not base:
        mock = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, str(HERE / "mock_upstream.py"), "--port", "9109"]
        )
        base = "http://127.0.0.1:9109"
        for _ in range(50):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)  # noqa: S310
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
    out: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/micro.db"
            subprocess.run(
                [sys.executable, str(HERE / "seed.py"), url, base + "/v1", KEY], check=True
            )
            lb = LedgerBench(url)
            lb.inline(200)
            out["ledger-inline"] = cpu_per_op(lb.inline, args.n, args.repeat)
            out["ledger-executor-c1"] = cpu_per_op(lambda k: lb.executor(k, 1), args.n, args.repeat)
            out["ledger-executor-c16"] = cpu_per_op(
                lambda k: lb.executor(k, 16), args.n * 2, args.repeat
            )
            lb.db.dispose()
        a, b = asgi_stack(args.n * 5)
        out["asgi-stack (full)"], out["asgi-stack (handler alone)"] = a, b
        out["asgi-stack (middlewares only)"] = a - b
        out["aiohttp-call"] = aiohttp_call(base, args.n)
        out["raw-httptools-call"] = raw_call(base, args.n)
        try:
            out.update(pg_roundtrips(args.n))
        except Exception as exc:  # noqa: BLE001 - PostgreSQL is optional here
            print(f"PostgreSQL part skipped: {exc}", file=sys.stderr)
        out["request-id token_hex(12)"] = cpu_per_op(
            lambda k: [secrets.token_hex(12) for _ in range(k)], 200_000, args.repeat
        )
        ctr = itertools.count()
        pre = secrets.token_hex(6)
        out["request-id counter"] = cpu_per_op(
            lambda k: [f"{pre}{next(ctr):012x}" for _ in range(k)], 200_000, args.repeat
        )

        async def loops(k: int) -> None:
            for _ in range(k):
                asyncio.get_running_loop()

        out["get_running_loop"] = cpu_per_op(lambda k: asyncio.run(loops(k)), 200_000, args.repeat)
    finally:
        if mock is not None:
            mock.terminate()
            mock.wait(5)
    for k, v in out.items():
        print(f"{k:32s} {v:9.2f} µs")
    print("MICROJSON " + json.dumps(out))


if __name__ == "__main__":
    main()
