"""Two gateway processes on one PostgreSQL database: the multi-process production setup.

PostgreSQL only, on purpose — SQLite is the embedded, single-process default; several gateway
processes sharing one system of record is what PostgreSQL is for (DESIGN.md §5–§6). Each test
runs against two real ``tallygate serve --no-migrate`` processes (A and B) started as
subprocesses on a throw-away database, in front of the fault-injecting test upstream, and talks
to them with the official ``openai`` SDK (async, no retries).

The processes refresh their configuration snapshot only every 60 s
(``TALLYGATE_CONFIG_REFRESH_SECONDS``): revocation and key spend limits must take effect in
every process at once WITHOUT a snapshot refresh, because they are enforced inside the hold.

Every expected charge is computed here from the configured prices and the upstream's true
usage (``multiprocess_helpers.expected_charge``), and every test ends with a clean
``tallygate reconcile`` run as a subprocess."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.gateway.multiprocess_helpers import (
    MIXED,
    MIXED_PRICES,
    OUT_ONLY,
    OUT_ONLY_PRICES,
    PASSWORD,
    Cluster,
    Gateway,
    assert_reconciled,
    cluster,
    expected_charge,
)

pytestmark = pytest.mark.timeout(120)

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Count the beans in the jar, please."}
]


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("multiprocess")) as running:
        yield running


@pytest.fixture
def mp(gateways: Cluster) -> Iterator[Cluster]:
    """The module's cluster with a clean upstream (records, faults, config) around each test."""
    gateways.upstream.reset()
    for gw in gateways.gateways:
        assert gw.proc.poll() is None, f"gateway {gw.name} died:\n{gw.log_tail()}"
    yield gateways
    gateways.upstream.reset()


Outcome = tuple[str, Any]
"""("ok", ChatCompletion) or ("error", openai.APIStatusError)."""


async def _chat(client: openai.AsyncOpenAI, model: str, max_tokens: int) -> Outcome:
    try:
        reply = await client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=max_tokens,
        )
    except openai.APIStatusError as exc:
        return "error", exc
    return "ok", reply


async def _spread(
    gws: tuple[Gateway, ...], api_key: str, n: int, model: str, max_tokens: int
) -> list[tuple[str, Outcome]]:
    """``n`` concurrent chat requests, alternating between the processes; (process, outcome)."""
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


def _one(gw: Gateway, api_key: str, model: str, max_tokens: int) -> Outcome:
    async def run() -> Outcome:
        async with gw.client(api_key) as client:
            return await asyncio.wait_for(_chat(client, model, max_tokens), timeout=30)

    return asyncio.run(run())


def _error(outcome: Outcome) -> openai.APIStatusError:
    kind, value = outcome
    assert kind == "error", f"expected an error, got {value!r}"
    assert isinstance(value, openai.APIStatusError)
    return value


def _request_id(exc: openai.APIStatusError) -> str:
    return str(exc.response.headers["x-request-id"])


def _usage_extra(reply: Any) -> dict[str, Any]:
    return dict(reply.usage.model_dump())


# ---- 1. concurrent requests never overdraw, across processes ---------------------------------


def test_100_concurrent_requests_across_two_processes_spend_exactly_the_balance(
    mp: Cluster,
) -> None:
    max_tokens = 20
    # The whole price is on output tokens and the upstream answers exactly max_tokens tokens,
    # so each hold (padded prompt × 0 + max_tokens × output) equals its charge.
    hold = expected_charge(OUT_ONLY_PRICES, 0, max_tokens)
    assert hold == 12_001  # 20 × 600_001_500 / 10^6 = 12_000.03, rounded up once
    user = mp.user()
    mp.topup(user.id, 10 * hold)
    key_id, api_key = mp.key(user.id)  # created after both processes started
    mp.upstream.configure(reply_tokens=64)  # the natural reply is longer than max_tokens
    mp.upstream.fault("fixed_delay", delay=0.3)

    started = time.monotonic()
    results = asyncio.run(_spread(mp.gateways, api_key, 100, OUT_ONLY, max_tokens))
    elapsed = time.monotonic() - started

    ok = [(gw, r) for gw, (kind, r) in results if kind == "ok"]
    refused = [(gw, _error(o)) for gw, o in results if o[0] == "error"]
    codes = Counter((gw, e.status_code, e.code) for gw, e in refused)
    assert len(ok) == 10 and len(refused) == 90, f"{len(ok)} succeeded; refused: {codes}"
    assert {(s, c) for _gw, s, c in codes} == {(402, "insufficient_balance")}, codes
    assert all("bucket routed" in str(exc.message) for _gw, exc in refused)
    per_process = Counter(gw for gw, _exc in refused)
    assert per_process["A"] >= 40 and per_process["B"] >= 40  # one balance held both to 10
    for _gw, reply in ok:
        assert reply.usage.completion_tokens == max_tokens
        extra = _usage_extra(reply)
        assert extra["cost_nanos"] == hold and extra["bucket"] == "routed"

    # The upstream saw only the 10 admitted requests, each answered with exactly max_tokens,
    # and they were in flight together (a 300 ms answer each, concurrent holds).
    recs = mp.upstream.requests
    assert len(recs) == 10
    for rec in recs:
        assert rec.usage is not None and rec.usage.completion_tokens == max_tokens
        assert expected_charge(OUT_ONLY_PRICES, rec.usage.prompt_tokens, max_tokens) == hold
    first_done = min(r.finished_at or float("inf") for r in recs)
    assert sum(r.arrived_at < first_done for r in recs) >= 2, "the admitted requests overlapped"
    assert elapsed < 30

    assert mp.balance(user.id) == (0, 0)  # exactly zero, nothing left held

    receipts = mp.receipts(key_id=key_id)
    assert len(receipts) == 100
    done = [r for r in receipts if r["status"] == "ok"]
    rejected = [r for r in receipts if r["status"] == "rejected"]
    assert len(done) == 10 and len(rejected) == 90
    for r in done:
        assert r["charge_nanos"] == hold == r["hold_nanos"]
        assert r["overrun_nanos"] == 0 and r["output_tokens"] == max_tokens
        assert r["entry_id"] is not None
        assert mp.usage_debit(r["entry_id"], user.id) == r["charge_nanos"]
    for r in rejected:
        assert r["http_status"] == 402 and r["error_code"] == "insufficient_balance"
        assert r["charge_nanos"] == 0 and r["entry_id"] is None
        assert r["charge_policy"] == "rejected:no_charge"
    assert sum(r["charge_nanos"] for r in receipts) == 10 * hold
    assert_reconciled(mp.url)


# ---- 2. revocation, at once, in the process that did not revoke ------------------------------


def test_revocation_takes_effect_at_once_in_both_processes(mp: Cluster) -> None:
    user = mp.user()
    mp.topup(user.id, 1_000_000_000)
    key_id, api_key = mp.key(user.id)

    for gw in mp.gateways:  # the key works in both (and both snapshots now hold it)
        kind, reply = _one(gw, api_key, MIXED, 5)
        assert kind == "ok", f"{gw.name}: {reply!r}"

    with mp.a.http() as http:
        login = http.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        revoked = http.post(
            f"/api/keys/{key_id}/revoke", headers={"Authorization": f"Bearer {token}"}
        )
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["status"] == "revoked"

    # The very next request on B — whose snapshot still lists the key — is refused.
    assert time.monotonic() - mp.started_at < 55, "too slow: B's 60 s refresh may have run"
    exc = _error(_one(mp.b, api_key, MIXED, 5))
    assert exc.status_code == 401 and exc.code == "invalid_api_key", str(exc)
    assert isinstance(exc, openai.AuthenticationError)
    # B knew the key (its snapshot was not refreshed: a key missing from the snapshot is refused
    # before any receipt); the hold itself refused it, and recorded why.
    on_b = mp.wait_receipt(_request_id(exc))
    assert on_b["status"] == "rejected" and on_b["http_status"] == 401
    assert on_b["key_id"] == key_id and "revoked" in on_b["error_message"]

    exc_a = _error(_one(mp.a, api_key, MIXED, 5))
    assert exc_a.status_code == 401 and exc_a.code == "invalid_api_key"

    receipts = mp.receipts(key_id=key_id)
    assert [r["status"] for r in receipts].count("ok") == 2
    assert len(mp.upstream.requests) == 2  # the refused requests never reached the upstream
    spend = mp.key_spend(key_id)
    assert spend["total_reserved_nanos"] == 0
    assert spend["total_spent_nanos"] == sum(r["charge_nanos"] for r in receipts)
    balance, held = mp.balance(user.id)
    assert held == 0 and balance == 1_000_000_000 - spend["total_spent_nanos"]
    assert_reconciled(mp.url)


# ---- 3. a spent key limit, at once, in both processes ----------------------------------------


def test_a_spent_key_limit_takes_effect_at_once_in_both_processes(mp: Cluster) -> None:
    max_tokens, admitted = 20, 4
    hold = expected_charge(OUT_ONLY_PRICES, 0, max_tokens)  # = the charge (see test 1)
    user = mp.user()
    mp.topup(user.id, 1_000_000_000)  # the balance is not the limit: the key is
    key_id, api_key = mp.key(user.id, routed_total_limit=admitted * hold)
    mp.upstream.configure(reply_tokens=64)
    mp.upstream.fault("fixed_delay", delay=0.3)

    results = asyncio.run(_spread(mp.gateways, api_key, 10, OUT_ONLY, max_tokens))
    ok = [r for _gw, (kind, r) in results if kind == "ok"]
    refused = [_error(o) for _gw, o in results if o[0] == "error"]
    assert len(ok) == admitted, [str(e)[:160] for e in refused]
    for exc in refused:
        assert exc.status_code == 402 and exc.code == "key_spend_limit", str(exc)

    # Spent: the next request on either process is refused (no refresh in between).
    for gw in (mp.a, mp.b, mp.b, mp.a):
        exc = _error(_one(gw, api_key, OUT_ONLY, max_tokens))
        assert exc.status_code == 402 and exc.code == "key_spend_limit", f"{gw.name}: {exc}"
        assert "total spend limit for bucket routed" in str(exc.message)

    receipts = mp.receipts(key_id=key_id)
    assert len(receipts) == 14
    charged = [r for r in receipts if r["status"] == "ok"]
    assert len(charged) == admitted and all(r["charge_nanos"] == hold for r in charged)
    assert all(
        r["error_code"] == "key_spend_limit" and r["charge_nanos"] == 0
        for r in receipts
        if r["status"] != "ok"
    )
    spend = mp.key_spend(key_id)
    assert spend["total_spent_nanos"] == sum(r["charge_nanos"] for r in receipts)
    assert spend["total_spent_nanos"] == admitted * hold == spend["limit_total_nanos"]
    assert spend["total_reserved_nanos"] == 0 and spend["day_reserved_nanos"] == 0
    assert spend["day_spent_nanos"] == admitted * hold
    assert mp.balance(user.id) == (1_000_000_000 - admitted * hold, 0)
    assert len(mp.upstream.requests) == admitted
    assert_reconciled(mp.url)


# ---- 4. a client disconnect through a real process -------------------------------------------


def test_client_disconnect_through_a_real_process_charges_only_what_was_received(
    mp: Cluster,
) -> None:
    user = mp.user()
    topup = 1_000_000_000
    mp.topup(user.id, topup)
    _key_id, api_key = mp.key(user.id)
    mp.upstream.configure(reply_tokens=400)
    mp.upstream.fault("slow_stream", chunk_delay=0.05)

    async def stream_and_close() -> tuple[str, int, float]:
        async with mp.b.client(api_key) as client:
            stream = await client.chat.completions.create(
                model=MIXED,
                messages=MESSAGES,
                max_tokens=300,
                stream=True,
                stream_options={"include_usage": True},
            )
            request_id = str(stream.response.headers["x-request-id"])
            received = 0
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received += 1
                    if received == 3:
                        break
            closed = time.monotonic()
            await stream.close()
            return request_id, received, closed

    request_id, received, closed = asyncio.run(asyncio.wait_for(stream_and_close(), 30))
    assert received == 3

    noticed = mp.upstream.wait_for_disconnect(0, timeout=5)
    assert 0 <= noticed - closed < 0.2, f"the upstream saw the close after {noticed - closed:.3f} s"

    receipt = mp.wait_receipt(request_id)
    rec = mp.upstream.request(0)
    time.sleep(0.15)
    assert mp.upstream.request(0).chunks_sent == rec.chunks_sent  # the upstream stopped
    assert rec.usage is not None and rec.finished_at is None
    assert 3 <= rec.completion_tokens_sent < 300
    expected = expected_charge(MIXED_PRICES, rec.usage.prompt_tokens, rec.completion_tokens_sent)

    assert receipt["client_disconnected"] == 1 and receipt["streamed"] == 1
    assert receipt["status"] == "partial" and receipt["failure_class"] == "client_abort"
    assert receipt["charge_policy"] == "client_abort:charge_received"
    assert receipt["input_tokens"] == rec.usage.prompt_tokens
    assert receipt["output_tokens"] == rec.completion_tokens_sent
    assert receipt["charge_nanos"] == expected
    assert receipt["entry_id"] is not None
    assert mp.usage_debit(receipt["entry_id"], user.id) == expected
    assert mp.balance(user.id) == (topup - expected, 0)
    assert_reconciled(mp.url)


def test_the_processes_are_still_healthy(mp: Cluster) -> None:
    for gw in mp.gateways:
        assert httpx.get(f"{gw.url}/healthz", timeout=5).status_code == 200
        assert "Traceback" not in gw.log_tail(100_000), gw.log_tail()
