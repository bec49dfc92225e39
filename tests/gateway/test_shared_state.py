"""Rate limits and route health shared through Redis (``TALLYGATE_REDIS_URL``), in process, on
both databases, against the real Redis on 127.0.0.1:6379 with a key prefix of each test's own.

"Another process" here is a second :class:`Limiter` / :class:`Health` on the same Redis and
prefix — exactly what a second gateway process holds (tests/gateway/test_multiprocess_redis.py
runs two real processes). With Redis unreachable the gateway must keep answering on its own
state and say so in a warning."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis

from tallygate.gateway.shared import Health, Limiter, RedisLink
from tallygate.routing.health import HealthBoard
from tests.fixtures.gateway import (
    CHAT,
    DEFAULT_SETTINGS,
    OFFICIAL,
    OFFICIAL_CHAT,
    World,
    WorldFactory,
    expected_charge,
)
from tests.gateway.conftest import REDIS_URL

MESSAGES: list[Any] = [{"role": "user", "content": "Who keeps the count?"}]
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def chat(client: openai.OpenAI, model: str = OFFICIAL_CHAT, **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", 8)
    return client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, **kwargs
    )


def attempts(receipt: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(a["channel"], a["status"]) for a in json.loads(receipt["attempts_json"])]


@pytest.fixture
def shared_world(make_world: WorldFactory, redis_prefix: str) -> World:
    return make_world(redis_url=REDIS_URL, redis_prefix=redis_prefix)


def other_process(world: World, prefix: str) -> tuple[Limiter, Health, RedisLink]:
    """What a second gateway process on the same Redis holds (same clock, same settings)."""
    link = RedisLink(REDIS_URL, prefix)
    board = HealthBoard(
        world.clock,
        window=DEFAULT_SETTINGS["circuit_window_seconds"],
        min_failures=DEFAULT_SETTINGS["circuit_min_failures"],
        failure_ratio=DEFAULT_SETTINGS["circuit_failure_ratio"],
        cool_down=DEFAULT_SETTINGS["circuit_cool_down_seconds"],
    )
    return Limiter(world.clock, link), Health(board, link), link


def run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


class TestSharedRateLimits:
    def test_requests_counted_elsewhere_count_here(
        self, shared_world: World, redis_prefix: str
    ) -> None:
        world = shared_world
        key_id, key = world.new_key(rpm_limit=3)
        limiter, _health, link = other_process(world, redis_prefix)

        async def elsewhere() -> list[bool]:
            try:
                return [
                    (await limiter.check(key_id, 3, None, 10, f"req_other_{i}")).allowed
                    for i in range(2)
                ]
            finally:
                await link.close()

        assert run(elsewhere()) == [True, True]
        with world.openai(key) as client:
            first = chat(client)
            with pytest.raises(openai.RateLimitError) as limited:
                chat(client)
        assert first.headers["x-ratelimit-remaining-requests"] == "0"  # 2 elsewhere + this one
        headers = limited.value.response.headers
        assert limited.value.code == "rate_limit_exceeded"
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert 1 <= int(headers["retry-after"]) <= 60
        assert len(world.primary.requests) == 1
        receipt = world.receipt(headers["x-request-id"])
        assert receipt["status"] == "rejected" and receipt["error_code"] == "rate_limit_exceeded"
        assert receipt["charge_nanos"] == 0 and receipt["entry_id"] is None

        world.clock.advance(61)  # the shared window slides with the server's clock too
        with world.openai(key) as client:
            assert chat(client).parse().choices

    def test_tokens_per_minute_are_counted_in_redis(
        self, shared_world: World, redis_prefix: str
    ) -> None:
        world = shared_world
        key_id, key = world.new_key(tpm_limit=1000)
        with world.openai(key) as client:
            first = chat(client, max_tokens=100)
        tokens = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
        assert tokens > 100  # the prompt's estimate plus max_tokens
        client_r = redis.Redis.from_url(REDIS_URL)
        try:
            assert int(client_r.get(f"{redis_prefix}rl:{key_id}:sum") or 0) == tokens
        finally:
            client_r.close()
        limiter, _health, link = other_process(world, redis_prefix)

        async def elsewhere() -> bool:
            try:  # takes all but fewer than one request's worth
                return (await limiter.check(key_id, None, 1000, 1000 - 2 * tokens + 1, "o")).allowed
            finally:
                await link.close()

        assert run(elsewhere())
        with world.openai(key) as client, pytest.raises(openai.RateLimitError) as limited:
            chat(client, max_tokens=100)
        headers = limited.value.response.headers
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        assert "tokens per minute" in limited.value.message
        assert len(world.primary.requests) == 1


class TestSharedCircuit:
    def test_failures_seen_by_another_process_open_the_circuit_here(
        self, shared_world: World, redis_prefix: str
    ) -> None:
        world = shared_world
        channel_a = world.channel_ids["official-a"]
        _limiter, health, link = other_process(world, redis_prefix)

        async def fail_three_times() -> None:
            try:
                for _ in range(3):
                    await health.record(channel_a, CHAT, False, 12.0, "upstream answered 500")
            finally:
                await link.close()

        run(fail_three_times())
        # This process never saw A fail, yet A is out of rotation and out of retries.
        with world.openai() as client:
            raw = chat(client)
        assert attempts(world.receipt(raw.headers["x-request-id"])) == [("Official B", 200)]
        assert len(world.primary.requests) == 0
        assert world.circuit("official-a") == "open"
        health_rows = {h["channel"]: h for h in world.route_health() if h["model"] == CHAT}
        assert health_rows["Official A"]["consecutive_failures"] == 3
        assert health_rows["Official A"]["success_rate"] == 0.0
        assert health_rows["Official A"]["last_error"] == "upstream answered 500"

        world.backup.fault("http_500", times=1)
        with world.openai() as client, pytest.raises(openai.APIStatusError) as failed:
            chat(client)
        assert failed.value.status_code == 502 and len(world.primary.requests) == 0

        # Cool-down by the test clock: one probe goes to A, succeeds, the circuit closes.
        world.clock.advance(31)
        with world.openai() as client:
            probe = chat(client)
            after = chat(client)
        assert attempts(world.receipt(probe.headers["x-request-id"])) == [("Official A", 200)]
        assert attempts(world.receipt(after.headers["x-request-id"])) == [("Official A", 200)]
        assert world.circuit("official-a") == "closed"

    def test_failures_here_open_the_circuit_in_redis_for_everyone(
        self, shared_world: World, redis_prefix: str
    ) -> None:
        world = shared_world
        world.primary.fault("http_500", model=f"{CHAT}-official")
        with world.openai() as client:
            for _ in range(3):
                raw = chat(client)
                truth = world.backup.last.usage
                assert truth is not None
                receipt = world.receipt(raw.headers["x-request-id"])
                assert attempts(receipt) == [("Official A", 500), ("Official B", 200)]
                assert receipt["charge_nanos"] == expected_charge(
                    OFFICIAL, truth.prompt_tokens, truth.completion_tokens
                )
        _limiter, health, link = other_process(world, redis_prefix)
        channel_a = world.channel_ids["official-a"]
        channel_b = world.channel_ids["official-b"]

        async def ask() -> list[bool]:
            try:
                return await health.available([channel_a, channel_b], CHAT)
            finally:
                await link.close()

        assert run(ask()) == [False, True]  # the other process would skip A too
        probe_holder = redis.Redis.from_url(REDIS_URL)
        try:
            state = probe_holder.hget(f"{redis_prefix}hc:{channel_a}:{CHAT}:state", "state")
        finally:
            probe_holder.close()
        assert state == b"open"

    def test_only_one_process_gets_the_half_open_probe(
        self, shared_world: World, redis_prefix: str
    ) -> None:
        world = shared_world
        channel_a = world.channel_ids["official-a"]
        _l1, first, link1 = other_process(world, redis_prefix)
        _l2, second, link2 = other_process(world, redis_prefix)

        async def scenario() -> tuple[bool, bool, bool, bool]:
            try:
                for _ in range(3):
                    await first.record(channel_a, CHAT, False, 5.0, "boom")
                world.clock.advance(31)
                got_first = (await first.available([channel_a], CHAT))[0]
                got_second = (await second.available([channel_a], CHAT))[0]
                await first.record(channel_a, CHAT, True, 5.0)  # the probe succeeded
                after_first = (await first.available([channel_a], CHAT))[0]
                after_second = (await second.available([channel_a], CHAT))[0]
                return got_first, got_second, after_first and after_second, True
            finally:
                await link1.close()
                await link2.close()

        got_first, got_second, closed_for_both, _ = run(scenario())
        assert got_first and not got_second
        assert closed_for_both
        assert world.circuit("official-a") == "closed"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def shared_warnings() -> Iterator[_Collect]:
    handler = _Collect()
    logger = logging.getLogger("tallygate.gateway.shared")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class TestRedisDown:
    def test_requests_are_served_on_local_state_with_a_warning(
        self, make_world: WorldFactory, shared_warnings: _Collect
    ) -> None:
        world = make_world(redis_url=DEAD_REDIS, redis_prefix="tg-test:dead:")
        _, key = world.new_key(rpm_limit=2)
        with world.openai(key) as client:
            first = chat(client)
            assert first.parse().choices
            chat(client)
            with pytest.raises(openai.RateLimitError):  # enforced locally meanwhile
                chat(client)
        receipt = world.receipt(first.headers["x-request-id"])
        assert receipt["status"] == "ok" and receipt["charge_nanos"] > 0
        assert any("Redis is unavailable" in m for m in shared_warnings.messages)
        # Logged once per outage, not once per request.
        assert sum("Redis is unavailable" in m for m in shared_warnings.messages) == 1

        # The circuit breaker works on local state too.
        world.primary.fault("http_500", model=f"{CHAT}-official")
        with world.openai() as client:
            for _ in range(3):
                chat(client)
            skipped = chat(client)
        assert attempts(world.receipt(skipped.headers["x-request-id"])) == [("Official B", 200)]
        assert world.circuit("official-a") == "open"
