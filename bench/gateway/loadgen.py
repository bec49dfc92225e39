#!/usr/bin/env python3
"""Closed-loop async load client (aiohttp + uvloop) for the streaming runs.

Adapted from ../shared/bench/peer/loadgen.py. Differences: it stops *gracefully* — after
``--duration`` no worker starts a new request, but every request in flight runs to its end — so
the number of successful requests it reports can be compared exactly with the receipts the
gateway wrote; and a stream counts as successful only with HTTP 200, at least ``--min-chunks``
``data:`` events, a usage event and ``data: [DONE]``.

  loadgen.py --url http://127.0.0.1:9101 -c 16 -d 10 [--stream] [--auth KEY]

Prints one line ``LGJSON {...}``: requests (successful), rps, p50/p90/p99 of the total time and,
for --stream, of the time to the first ``data:`` event (TTFB), and error counts.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from urllib.parse import urlparse

import aiohttp

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(values) - 1)
    return values[f] + (values[c] - values[f]) * (k - f)


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    sys.exit(f"loadgen: refusing non-loopback target {host!r}")


async def run(a: argparse.Namespace) -> None:
    url = a.url.rstrip("/") + "/v1/chat/completions"
    body = {
        "model": a.model,
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 32,
    }
    if a.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if a.auth:
        headers["Authorization"] = "Bearer " + a.auth
    lat: list[float] = []
    ttfb: list[float] = []
    errs = {"status": 0, "exc": 0, "no_done": 0, "no_usage": 0, "few_chunks": 0}
    stop_at = time.perf_counter() + a.duration
    t_start = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=a.concurrency)
    timeout = aiohttp.ClientTimeout(total=a.timeout)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:

        async def worker() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at or len(lat) >= a.max_requests:
                    return
                try:
                    async with s.post(url, data=payload, headers=headers) as r:
                        if r.status != 200:
                            await r.read()
                            errs["status"] += 1
                            continue
                        if a.stream:
                            first = None
                            events = 0
                            saw_done = saw_usage = False
                            async for line in r.content:
                                if not line.startswith(b"data:"):
                                    continue
                                if first is None:
                                    first = time.perf_counter()
                                if line.startswith(b"data: [DONE]"):
                                    saw_done = True
                                    continue
                                events += 1
                                if b'"usage":{' in line or b'"usage": {' in line:
                                    saw_usage = True
                            t1 = time.perf_counter()
                            bad = False
                            if not saw_done:
                                errs["no_done"] += 1
                                bad = True
                            if not saw_usage:
                                errs["no_usage"] += 1
                                bad = True
                            if events < a.min_chunks:
                                errs["few_chunks"] += 1
                                bad = True
                            if bad:
                                continue
                            ttfb.append((first - t0) * 1000)  # type: ignore[operator]
                        else:
                            await r.read()
                            t1 = time.perf_counter()
                    lat.append((t1 - t0) * 1000)
                except Exception:  # noqa: BLE001 - counted
                    errs["exc"] += 1
                    await asyncio.sleep(0.01)

        await asyncio.gather(*[worker() for _ in range(a.concurrency)])
    elapsed = time.perf_counter() - t_start
    lat.sort()
    ttfb.sort()
    out = {
        "requests": len(lat),
        "duration_s": round(elapsed, 3),
        "rps": round(len(lat) / elapsed, 2) if elapsed else 0,
        "p50_ms": round(pct(lat, 50), 3),
        "p90_ms": round(pct(lat, 90), 3),
        "p99_ms": round(pct(lat, 99), 3),
        "errors": sum(errs.values()),
        "error_kinds": errs,
    }
    if a.stream:
        out.update(
            ttfb_p50_ms=round(pct(ttfb, 50), 3),
            ttfb_p99_ms=round(pct(ttfb, 99), 3),
        )
    print("LGJSON " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="mock-model")
    ap.add_argument("--auth", default="")
    ap.add_argument("--concurrency", "-c", type=int, default=16)
    ap.add_argument("--duration", "-d", type=float, default=10.0)
    ap.add_argument("--max-requests", "-n", type=int, default=10_000_000)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--min-chunks", type=int, default=11, help="data events before [DONE]")
    ap.add_argument("--stream", action="store_true")
    a = ap.parse_args()
    check_loopback(a.url)
    a.duration = min(a.duration, 600.0)
    if uvloop:
        uvloop.install()
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
