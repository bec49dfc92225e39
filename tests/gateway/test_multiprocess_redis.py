"""Two real gateway processes sharing rate limits and route health through Redis.

PostgreSQL only, like test_multiprocess.py (several processes on one system of record is what
PostgreSQL is for); both processes get ``TALLYGATE_REDIS_URL`` (the real Redis on
127.0.0.1:6379) and a key prefix of this module's own. Without Redis each process would admit a
key's full rate limit by itself and would have to see a channel fail on its own before skipping
it; with Redis the limits are exact across the processes and one process's failures open the
circuit for both."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam

from tests.gateway.conftest import REDIS_URL
from tests.gateway.multiprocess_helpers import (
    MIXED,
    OUT_ONLY,
    Cluster,
    Gateway,
    assert_reconciled,
    cluster,
)

pytestmark = pytest.mark.timeout(120)

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Share the count between the two of you."}
]
COOL_DOWN = 1.5


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    prefix = f"tg-test:mp:{secrets.token_hex(6)}:"
    env = {
        "TALLYGATE_REDIS_URL": REDIS_URL,
        "TALLYGATE_REDIS_PREFIX": prefix,
        "TALLYGATE_CIRCUIT_MIN_FAILURES": "3",
        "TALLYGATE_CIRCUIT_COOL_DOWN_SECONDS": str(COOL_DOWN),
    }
    client = redis.Redis.from_url(REDIS_URL)
    try:
        with cluster(tmp_path_factory.mktemp("multiprocess-redis"), env) as running:
            yield running
    finally:
        stale = list(client.scan_iter(match=prefix + "*", count=500))
        if stale:
            client.delete(*stale)
        client.close()


@pytest.fixture
def mp(gateways: Cluster) -> Iterator[Cluster]:
    gateways.upstream.reset()
    for gw in gateways.gateways:
        assert gw.proc.poll() is None, f"gateway {gw.name} died:\n{gw.log_tail()}"
    yield gateways
    gateways.upstream.reset()


Outcome = tuple[str, Any]


async def _chat(client: openai.AsyncOpenAI, model: str, max_tokens: int) -> Outcome:
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, max_tokens=max_tokens
        )
    except openai.APIStatusError as exc:
        return "error", exc
    return "ok", raw


async def _spread(
    gws: tuple[Gateway, ...], api_key: str, n: int, model: str, max_tokens: int
) -> list[tuple[str, Outcome]]:
    clients = [gw.client(api_key) for gw in gws]
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(_chat(clients[i % len(gws)], model, max_tokens) for i in range(n))),
            timeout=45,
        )
    finally:
        for c in clients:
            await c.close()
    return [(gws[i % len(gws)].name, outcome) for i, outcome in enumerate(outcomes)]


def _one(gw: Gateway, api_key: str, model: str, max_tokens: int = 5) -> Outcome:
    async def go() -> Outcome:
        async with gw.client(api_key) as client:
            return await asyncio.wait_for(_chat(client, model, max_tokens), timeout=30)

    return asyncio.run(go())


def _error(outcome: Outcome) -> openai.APIStatusError:
    kind, value = outcome
    assert kind == "error", f"expected an error, got {value!r}"
    assert isinstance(value, openai.APIStatusError)
    return value


def test_requests_per_minute_are_exact_across_both_processes(mp: Cluster) -> None:
    user = mp.user()
    mp.topup(user.id, 1_000_000_000)
    key_id, api_key = mp.key(user.id, rpm_limit=10)
    mp.upstream.fault("fixed_delay", delay=0.2)  # the requests overlap

    results = asyncio.run(_spread(mp.gateways, api_key, 30, OUT_ONLY, 5))

    ok = [gw for gw, (kind, _r) in results if kind == "ok"]
    refused = [(gw, _error(o)) for gw, o in results if o[0] == "error"]
    assert len(ok) == 10, Counter((gw, e.status_code, e.code) for gw, e in refused)
    assert len(refused) == 20
    per_process = Counter(gw for gw, _e in refused)
    assert per_process["A"] >= 5 and per_process["B"] >= 5  # each refused the other's share
    for _gw, exc in refused:
        assert exc.status_code == 429 and exc.code == "rate_limit_exceeded", str(exc)
        headers = exc.response.headers
        assert 1 <= int(headers["retry-after"]) <= 60
        assert headers["x-ratelimit-limit-requests"] == "10"
        assert headers["x-ratelimit-remaining-requests"] == "0"
    assert len(mp.upstream.requests) == 10

    receipts = mp.receipts(key_id=key_id)
    assert Counter(r["status"] for r in receipts) == {"ok": 10, "rejected": 20}
    for r in receipts:
        if r["status"] == "rejected":
            assert r["http_status"] == 429 and r["charge_nanos"] == 0 and r["entry_id"] is None
    for gw in mp.gateways:  # and still refused on either process, the window being full
        exc = _error(_one(gw, api_key, OUT_ONLY))
        assert exc.status_code == 429, f"{gw.name}: {exc}"
    assert_reconciled(mp.url)


def test_tokens_per_minute_are_exact_across_both_processes(mp: Cluster) -> None:
    user = mp.user()
    mp.topup(user.id, 1_000_000_000)
    tpm = 400
    _key_id, api_key = mp.key(user.id, tpm_limit=tpm)
    kind, first = _one(mp.a, api_key, OUT_ONLY, 20)
    assert kind == "ok", first
    per_request = tpm - int(first.headers["x-ratelimit-remaining-tokens"])
    assert per_request > 20  # the prompt estimate plus max_tokens
    fit = tpm // per_request
    assert fit >= 3
    mp.upstream.fault("fixed_delay", delay=0.2)

    results = asyncio.run(_spread(mp.gateways, api_key, 4 * fit, OUT_ONLY, 20))

    ok = [gw for gw, (k, _r) in results if k == "ok"]
    refused = [_error(o) for _gw, o in results if o[0] == "error"]
    assert len(ok) == fit - 1, [str(e)[:120] for e in refused]
    for exc in refused:
        assert exc.status_code == 429 and "tokens per minute" in exc.message
        assert exc.response.headers["x-ratelimit-limit-tokens"] == str(tpm)
    assert len(mp.upstream.requests) == fit  # the first one and the fit - 1 admitted here
    assert_reconciled(mp.url)


def test_failures_seen_by_one_process_open_the_circuit_for_both(mp: Cluster) -> None:
    user = mp.user()
    mp.topup(user.id, 1_000_000_000)
    _key_id, api_key = mp.key(user.id)
    mp.upstream.fault("http_500", model=f"{MIXED}-upstream")  # until cleared

    for _ in range(3):  # the cluster's only channel fails three times on A
        exc = _error(_one(mp.a, api_key, MIXED))
        assert exc.status_code == 502 and exc.code == "upstream_failed", str(exc)
    assert len(mp.upstream.requests) == 3

    # B has not seen a single failure, yet it does not call the sick channel.
    exc = _error(_one(mp.b, api_key, MIXED))
    assert exc.status_code == 503 and exc.code == "model_unavailable", str(exc)
    assert "circuit" in exc.message
    assert len(mp.upstream.requests) == 3
    # Another model on the same channel is a different route: unaffected.
    kind, reply = _one(mp.b, api_key, OUT_ONLY)
    assert kind == "ok", reply
    opened = time.monotonic()

    # The upstream recovers; after the cool-down one process probes, and both are back.
    mp.upstream.clear_faults()
    exc = _error(_one(mp.a, api_key, MIXED))
    assert exc.status_code == 503  # still cooling down
    time.sleep(max(0.0, COOL_DOWN + 0.1 - (time.monotonic() - opened)))
    kind, probe = _one(mp.b, api_key, MIXED)
    assert kind == "ok", probe
    kind, after = _one(mp.a, api_key, MIXED)
    assert kind == "ok", after
    assert [r.model for r in mp.upstream.requests].count(f"{MIXED}-upstream") == 5
    assert_reconciled(mp.url)


def test_the_processes_are_still_healthy(mp: Cluster) -> None:
    for gw in mp.gateways:
        assert gw.proc.poll() is None
        log = gw.log_tail(100_000)
        assert "Traceback" not in log and "Redis is unavailable" not in log, log
