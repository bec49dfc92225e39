"""A key's expiry and its per-UTC-day spend limit, enforced on real requests through the
gateway (the openai SDK against a live server, time moved by the test clock): refused in
OpenAI's shape, nothing sent upstream, nothing charged — and enforced inside the hold itself,
so a gateway process whose cached view of the key is stale refuses it all the same."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import openai
import pytest
from sqlalchemy import update

from tallygate.kit.clock import to_epoch_us
from tallygate.models.keys import api_keys
from tests.fixtures.gateway import (
    OFFICIAL,
    OFFICIAL_CHAT,
    ROUTED_CHAT,
    START_BALANCE,
    World,
    WorldFactory,
    expected_charge,
    gateway_upstreams,
    make_world,
    reconciled,
    world,
)

__all__ = ["gateway_upstreams", "make_world", "reconciled", "world"]

MESSAGES: list[Any] = [{"role": "user", "content": "How much may I spend?"}]
DAY = 24 * 3600


def chat(client: openai.OpenAI, model: str = OFFICIAL_CHAT) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=5
    )


def prompt_tokens(world: World) -> int:
    """The true prompt size of MESSAGES, asked of the upstream directly."""
    with world.primary.client() as upstream:
        usage = upstream.chat.completions.create(
            model="count", messages=MESSAGES, max_tokens=1
        ).usage
    assert usage is not None
    return usage.prompt_tokens


def hold_for(prompt: int, max_tokens: int) -> int:
    """docs/billing.md: the prompt estimate padded by 12.5% + 16 tokens, plus max_tokens."""
    padded = prompt + prompt // 8 + 16
    return -(-(padded * OFFICIAL.input + max_tokens * OFFICIAL.output) // 1_000_000)


def assert_refused_for_nothing(world: World, request_id: str, code: str) -> None:
    receipt = world.receipt(request_id)
    assert receipt["status"] == "rejected" and receipt["error_code"] == code
    assert receipt["charge_nanos"] == 0 and receipt["entry_id"] is None


class TestExpiry:
    def test_a_key_works_until_it_expires_then_is_a_401(self, world: World) -> None:
        expires = world.clock.now() + dt.timedelta(hours=1)
        _, key = world.new_key(expires_at=expires)
        with world.openai(key, max_retries=0) as client:
            first = chat(client)
            world.clock.advance(3600)  # exactly at its expiry: no longer valid
            with pytest.raises(openai.AuthenticationError) as refused:
                chat(client)
            with pytest.raises(openai.AuthenticationError):
                client.models.list()
        assert refused.value.status_code == 401
        assert refused.value.code == "invalid_api_key"
        assert "expired" in refused.value.message
        assert len(world.primary.requests) == 1
        truth = world.primary.last.usage
        assert truth is not None
        charged = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)
        assert world.receipt(first.headers["x-request-id"])["charge_nanos"] == charged
        assert world.balance() == START_BALANCE - charged

    def test_the_hold_refuses_a_key_whose_expiry_the_cached_view_does_not_know(
        self, make_world: WorldFactory
    ) -> None:
        world = make_world(config_refresh_seconds=600.0)  # the cached view is never reloaded
        key_id, key = world.new_key()
        with world.openai(key, max_retries=0) as client:
            assert chat(client).parse().choices  # the gateway has the key cached now
            with world.db.begin() as conn:  # as another process (or the operator) would
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id)
                    .values(expires_at=to_epoch_us(world.clock.now()))
                )
            cached = world.app.state.gateway.snapshot.keys[hashlib.sha256(key.encode()).hexdigest()]
            assert cached.expires_at is None  # only the hold's own check can refuse it
            with pytest.raises(openai.AuthenticationError) as refused:
                chat(client)
        assert refused.value.code == "invalid_api_key"
        assert "expired" in refused.value.message
        assert_refused_for_nothing(
            world, refused.value.response.headers["x-request-id"], "invalid_api_key"
        )
        assert len(world.primary.requests) == 1
        assert world.held() == 0


class TestDailySpendLimit:
    def test_a_spent_daily_limit_is_a_402_until_the_next_utc_day(self, world: World) -> None:
        limit = hold_for(prompt_tokens(world), 5)  # room for exactly one such hold a day
        key_id, key = world.new_key(spend_limits={"credit": {"daily": limit}})
        world.clock.advance(DAY - 60)  # 23:59 UTC: the day's limit is still fresh
        with world.openai(key, max_retries=0) as client:
            first = chat(client)
            with pytest.raises(openai.APIStatusError) as refused:
                chat(client)
            assert chat(client, ROUTED_CHAT).parse().choices  # another bucket: its own limit
            world.clock.advance(60)  # midnight UTC: a new day, a new daily allowance
            again = chat(client)
        assert refused.value.status_code == 402
        assert refused.value.code == "key_spend_limit"
        assert "daily" in refused.value.message and "credit" in refused.value.message
        assert_refused_for_nothing(
            world, refused.value.response.headers["x-request-id"], "key_spend_limit"
        )
        charges = [world.receipt(r.headers["x-request-id"])["charge_nanos"] for r in (first, again)]
        assert all(0 < c < limit for c in charges)
        assert world.balance(bucket="credit") == START_BALANCE - sum(charges)
        assert len([r for r in world.primary.requests if r.model.endswith("-official")]) == 2
        # The key's counters agree with its receipts: charges, not holds, and nothing left held.
        with world.as_user() as http:
            spend = {s["bucket"]: s for s in http.get(f"/api/keys/{key_id}").json()["spend"]}
        assert spend["credit"]["total_spent_nanos"] == sum(charges)
        assert spend["credit"]["today_spent_nanos"] == charges[1]  # the new UTC day's only one
        assert spend["credit"]["reserved_nanos"] == 0


class TestTokensPerMinute:
    def test_past_the_tokens_per_minute_it_is_a_429_until_the_window_slides(
        self, world: World
    ) -> None:
        _, key = world.new_key(tpm_limit=1000)
        with world.openai(key, max_retries=0) as client:
            first = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=300
            )
            counted = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
            assert counted > 300  # the prompt's estimate plus max_tokens
            assert first.headers["x-ratelimit-limit-tokens"] == "1000"
            second = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=300
            )
            assert int(second.headers["x-ratelimit-remaining-tokens"]) == 1000 - 2 * counted
            with pytest.raises(openai.RateLimitError) as limited:
                client.chat.completions.create(
                    model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=1000 - 2 * counted + 300
                )
            headers = limited.value.response.headers
            assert limited.value.code == "rate_limit_exceeded"
            assert "tokens per minute" in limited.value.message
            assert headers["x-ratelimit-limit-tokens"] == "1000"
            assert 1 <= int(headers["retry-after"]) <= 60
            assert_refused_for_nothing(world, headers["x-request-id"], "rate_limit_exceeded")
            assert len(world.primary.requests) == 2

            world.clock.advance(61)  # the window slides with the server's clock
            assert chat(client).parse().choices
