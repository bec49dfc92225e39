"""A price change reaches real requests: the next request through the gateway is charged at the
new price version and its receipt names that version and its prices, while earlier receipts
keep theirs. Charges are computed here from the prices set and the upstream's true usage —
nothing is asked of the gateway. On SQLite and PostgreSQL; the ledger reconciles after each
test."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from tests.fixtures.gateway import (
    CHAT,
    OFFICIAL,
    OFFICIAL_CHAT,
    ROUTED,
    ROUTED_CHAT,
    START_BALANCE,
    Prices,
    World,
    expected_charge,
    gateway_upstreams,
    make_world,
    reconciled,
    world,
)

__all__ = ["gateway_upstreams", "make_world", "reconciled", "world"]

MESSAGES: list[Any] = [{"role": "user", "content": "What does this cost today?"}]
NEW_OFFICIAL = replace(
    OFFICIAL, input=3_000_000_007, output=12_000_000_011, cached_input=1_500_000_013
)


def per_m_text(nanos: int) -> str:
    """Nano-units per million tokens as the catalog API's decimal (9 places)."""
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


def chat(world: World, prices: Prices, model: str = OFFICIAL_CHAT) -> tuple[dict[str, Any], int]:
    """One request: its receipt, and its charge computed from ``prices`` and the true usage."""
    with world.openai(max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, max_tokens=6
        )
    truth = world.primary.last.usage
    assert truth is not None
    receipt = world.receipt(raw.headers["x-request-id"])
    return receipt, expected_charge(prices, truth.prompt_tokens, truth.completion_tokens)


def current_version(world: World, route_type: str) -> int:
    with world.as_operator() as http:
        model = http.get(f"/admin/api/models/{CHAT}").json()
    (offer,) = [o for o in model["offers"] if o["route_type"] == route_type]
    return int(offer["price_version_id"])


def set_official_prices(world: World, prices: Prices) -> int:
    """PUT the offer's prices as an operator; the new version, once the gateway has it."""
    with world.as_operator() as http:
        response = http.put(
            f"/admin/api/models/{CHAT}/offers/official",
            json={
                "input": per_m_text(prices.input),
                "output": per_m_text(prices.output),
                "cached_input": per_m_text(prices.cached_input),
            },
        )
    assert response.status_code == 200, response.text
    version = current_version(world, "official")
    runtime = world.app.state.gateway
    deadline = time.monotonic() + 5
    while runtime.snapshot.models[CHAT].offers["official"].price.version_id != version:
        assert time.monotonic() < deadline, "the gateway never picked up the new prices"
        time.sleep(0.01)
    return version


def assert_priced(receipt: dict[str, Any], version: int, prices: Prices, charge: int) -> None:
    assert receipt["price_version_id"] == version
    assert (
        receipt["input_per_m_nanos"],
        receipt["output_per_m_nanos"],
        receipt["cached_input_per_m_nanos"],
    ) == (prices.input, prices.output, prices.cached_input)
    assert receipt["charge_nanos"] == charge


def test_the_next_request_pays_the_new_version_and_each_receipt_names_its_own(
    world: World,
) -> None:
    old_version = current_version(world, "official")
    before, old_charge = chat(world, OFFICIAL)
    assert_priced(before, old_version, OFFICIAL, old_charge)

    new_version = set_official_prices(world, NEW_OFFICIAL)
    assert new_version != old_version
    after, new_charge = chat(world, NEW_OFFICIAL)

    assert_priced(after, new_version, NEW_OFFICIAL, new_charge)
    assert new_charge > old_charge
    assert_priced(world.receipt(before["request_id"]), old_version, OFFICIAL, old_charge)
    assert world.user_debit(after["entry_id"]) == new_charge
    assert world.balance() == START_BALANCE - old_charge - new_charge


def test_a_price_change_on_one_route_type_leaves_the_other_alone(world: World) -> None:
    routed_version = current_version(world, "routed")
    set_official_prices(world, NEW_OFFICIAL)
    receipt, charge = chat(world, ROUTED, ROUTED_CHAT)
    assert_priced(receipt, routed_version, ROUTED, charge)
    assert world.balance(bucket="routed") == START_BALANCE - charge


class TestCachedInputPrice:
    """An upstream with prompt caching reports part of the prompt as cached: that part is
    charged at the offer's cached-input price, streamed or not (peers.md §3: a stream that
    dropped cached-token usage billed about 4× for the same work)."""

    CACHED = 12

    def expected(self, world: World, prices: Prices) -> tuple[int, int]:
        truth = world.primary.last.usage
        assert truth is not None and truth.cached_tokens == self.CACHED
        charge = expected_charge(
            prices, truth.prompt_tokens, truth.completion_tokens, truth.cached_tokens
        )
        assert charge < expected_charge(prices, truth.prompt_tokens, truth.completion_tokens)
        return truth.cached_tokens, charge

    def assert_receipt(self, world: World, request_id: str, prices: Prices) -> None:
        cached, charge = self.expected(world, prices)
        receipt = world.receipt(request_id)
        assert receipt["cached_tokens"] == cached
        assert receipt["usage_basis"] == "upstream"
        assert receipt["charge_nanos"] == charge == world.user_debit(receipt["entry_id"])

    def test_a_chat(self, world: World) -> None:
        world.primary.configure(cached_prompt_tokens=self.CACHED)
        with world.openai(max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=6
            )
        usage = raw.parse().usage
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == self.CACHED
        self.assert_receipt(world, raw.headers["x-request-id"], OFFICIAL)

    @pytest.mark.parametrize("include_usage", [True, False])
    def test_a_stream(self, world: World, include_usage: bool) -> None:
        world.primary.configure(cached_prompt_tokens=self.CACHED)
        options = {"stream_options": {"include_usage": True}} if include_usage else {}
        with world.openai(max_retries=0) as client:
            stream = client.chat.completions.create(
                model=ROUTED_CHAT, messages=MESSAGES, max_tokens=6, stream=True, **options
            )
            request_id = stream.response.headers["x-request-id"]
            chunks = list(stream)
        assert any(c.usage is not None for c in chunks) == include_usage
        self.assert_receipt(world, request_id, ROUTED)

    def test_a_responses_call(self, world: World) -> None:
        world.primary.configure(cached_prompt_tokens=self.CACHED)
        with world.openai(max_retries=0) as client:
            raw = client.responses.with_raw_response.create(
                model=OFFICIAL_CHAT, input="What does this cost today?", max_output_tokens=16
            )
        self.assert_receipt(world, raw.headers["x-request-id"], OFFICIAL)


class TestEmptyAnswer:
    """An upstream that answers with zero output tokens: by default nothing is charged; with
    the operator's ``charge_prompt`` the prompt is charged at the input price, and nothing else
    (docs/billing.md, the charge policy's ``empty_output`` class)."""

    def ask(self, world: World, stream: bool) -> str:
        world.primary.configure(reply_tokens=0)
        with world.openai(max_retries=0) as client:
            if stream:
                chunks = client.chat.completions.create(
                    model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=6, stream=True
                )
                request_id = chunks.response.headers["x-request-id"]
                assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
                return str(request_id)
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=6
            )
            assert raw.parse().choices[0].message.content == ""
            return str(raw.headers["x-request-id"])

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_by_default_an_empty_answer_costs_nothing(self, world: World, stream: bool) -> None:
        receipt = world.receipt(self.ask(world, stream))
        truth = world.primary.last.usage
        assert truth is not None and truth.completion_tokens == 0
        assert receipt["output_tokens"] == 0 and receipt["input_tokens"] == truth.prompt_tokens
        assert receipt["failure_class"] == "empty_output"
        assert receipt["charge_policy"] == "empty_output:no_charge"
        assert receipt["charge_nanos"] == 0
        assert world.balance() == START_BALANCE and world.held() == 0

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_with_charge_prompt_only_the_prompt_is_charged(
        self, world: World, stream: bool
    ) -> None:
        world.set_charge_policy(empty_output="charge_prompt")
        receipt = world.receipt(self.ask(world, stream))
        truth = world.primary.last.usage
        assert truth is not None and truth.completion_tokens == 0
        charge = expected_charge(OFFICIAL, truth.prompt_tokens, 0)
        assert receipt["charge_policy"] == "empty_output:charge_prompt"
        assert receipt["charge_nanos"] == charge == world.user_debit(receipt["entry_id"])
        assert world.balance() == START_BALANCE - charge
