"""Successful requests through the official ``openai`` SDK: the receipt's charge equals its
ledger entry and the charge computed here from the configured prices and the upstream's true
usage; the response carries that cost exactly, in the body and the headers; the right bucket
pays."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import openai
import pytest

from tallygate.gateway import proxy
from tests.fixtures.gateway import (
    CHAT,
    OFFICIAL,
    OFFICIAL_CHAT,
    OFFICIAL_EMBED,
    ROUTED,
    ROUTED_CHAT,
    START_BALANCE,
    Prices,
    World,
    as_decimal,
    expected_charge,
)

MESSAGES: list[Any] = [{"role": "user", "content": "How long is a piece of string, really?"}]


def assert_billed(
    world: World,
    request_id: str,
    prices: Prices,
    prompt: int,
    completion: int,
    *,
    balance_before: int = START_BALANCE,
) -> dict[str, Any]:
    """receipt == ledger entry == the expected charge; the bucket lost exactly that."""
    expected = expected_charge(prices, prompt, completion)
    receipt = world.receipt(request_id)
    assert receipt["status"] == "ok"
    assert receipt["bucket"] == prices.bucket
    assert receipt["currency"] == prices.currency
    assert (receipt["input_tokens"], receipt["output_tokens"]) == (prompt, completion)
    assert receipt["charge_nanos"] == expected
    assert world.entries_for(request_id) == [receipt["entry_id"]]
    assert world.user_debit(receipt["entry_id"]) == expected
    assert world.balance(bucket=prices.bucket) == balance_before - expected
    assert receipt["balance_after_nanos"] == balance_before - expected
    return receipt


def assert_cost_headers(world: World, headers: Any, prices: Prices, charge: int) -> None:
    assert headers["x-request-id"].startswith("req_")
    assert Decimal(headers["x-tallygate-charge"]) == as_decimal(charge)
    assert headers["x-tallygate-currency"] == prices.currency
    assert headers["x-tallygate-bucket"] == prices.bucket
    balance = world.balance(bucket=prices.bucket)
    assert Decimal(headers["x-tallygate-balance-after"]) == as_decimal(balance)


def raw_usage(text: str, *path: str) -> dict[str, Any]:
    """The ``usage`` object of a raw JSON body, numbers read as exact decimals."""
    data = json.loads(text, parse_float=Decimal)
    for name in path:
        data = data[name]
    return dict(data["usage"])


class TestChatCompletions:
    def test_an_official_chat_is_charged_exactly_to_credit(self, world: World) -> None:
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=30
            )
        completion = raw.parse()
        truth = world.primary.last.usage
        assert truth is not None
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)

        assert completion.choices[0].message.content
        assert world.primary.last.model == f"{CHAT}-official"
        assert_billed(world, raw.headers["x-request-id"], OFFICIAL, *truth_pair(truth))
        usage = raw_usage(raw.http_response.text)
        assert usage["cost_nanos"] == expected
        assert usage["cost"] == as_decimal(expected)  # exact, not a float
        assert usage["cost_currency"] == "USD" and usage["bucket"] == "credit"
        assert_cost_headers(world, raw.headers, OFFICIAL, expected)
        assert world.balance(bucket="routed") == START_BALANCE

    def test_a_routed_chat_is_charged_to_the_routed_bucket(self, world: World) -> None:
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=ROUTED_CHAT, messages=MESSAGES
            )
        truth = world.primary.last.usage
        assert truth is not None
        expected = expected_charge(ROUTED, *truth_pair(truth))

        assert world.primary.last.model == f"{CHAT}-routed"
        assert_billed(world, raw.headers["x-request-id"], ROUTED, *truth_pair(truth))
        assert raw_usage(raw.http_response.text)["cost"] == as_decimal(expected)
        assert_cost_headers(world, raw.headers, ROUTED, expected)
        assert world.balance(bucket="credit") == START_BALANCE

    def test_the_async_client_is_billed_the_same_way(self, world: World) -> None:
        async def call() -> Any:
            async with world.async_openai() as client:
                return await client.chat.completions.with_raw_response.create(
                    model=OFFICIAL_CHAT, messages=MESSAGES, max_completion_tokens=12
                )

        raw = asyncio.run(call())
        truth = world.primary.last.usage
        assert truth is not None and truth.completion_tokens == 12
        assert_billed(world, raw.headers["x-request-id"], OFFICIAL, *truth_pair(truth))

    def test_several_requests_each_leave_their_own_receipt_and_entry(self, world: World) -> None:
        before = START_BALANCE
        with world.openai() as client:
            for n in (3, 7, 11):
                raw = client.chat.completions.with_raw_response.create(
                    model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=n
                )
                truth = world.primary.last.usage
                assert truth is not None
                receipt = assert_billed(
                    world,
                    raw.headers["x-request-id"],
                    OFFICIAL,
                    *truth_pair(truth),
                    balance_before=before,
                )
                before -= receipt["charge_nanos"]
        assert len(world.receipts()) == 3


class TestOtherEndpoints:
    def test_a_legacy_completion_is_charged_from_its_usage(self, world: World) -> None:
        with world.openai() as client:
            raw = client.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, prompt="Say something about ledgers", max_tokens=9
            )
        truth = world.primary.last.usage
        assert truth is not None and truth.completion_tokens == 9
        expected = expected_charge(OFFICIAL, *truth_pair(truth))
        assert_billed(world, raw.headers["x-request-id"], OFFICIAL, *truth_pair(truth))
        assert raw_usage(raw.http_response.text)["cost_nanos"] == expected
        assert_cost_headers(world, raw.headers, OFFICIAL, expected)

    def test_embeddings_are_charged_for_their_input(self, world: World) -> None:
        with world.openai() as client:
            raw = client.embeddings.with_raw_response.create(
                model=OFFICIAL_EMBED, input=["one ledger", "two ledgers and a receipt"]
            )
        assert len(raw.parse().data) == 2
        truth = world.primary.last.usage
        assert truth is not None and truth.completion_tokens == 0
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, 0)
        receipt = assert_billed(
            world, raw.headers["x-request-id"], OFFICIAL, truth.prompt_tokens, 0
        )
        assert receipt["failure_class"] == ""  # no output expected: not an "empty output"
        assert raw_usage(raw.http_response.text)["cost"] == as_decimal(expected)

    def test_a_responses_call_is_charged_from_its_usage(self, world: World) -> None:
        with world.openai() as client:
            raw = client.responses.with_raw_response.create(
                model=OFFICIAL_CHAT, input="Tell me about double-entry books", max_output_tokens=20
            )
        assert raw.parse().output_text
        truth = world.primary.last.usage
        assert truth is not None
        expected = expected_charge(OFFICIAL, *truth_pair(truth))
        assert_billed(world, raw.headers["x-request-id"], OFFICIAL, *truth_pair(truth))
        usage = raw_usage(raw.http_response.text)
        assert usage["cost"] == as_decimal(expected) and usage["cost_nanos"] == expected
        assert_cost_headers(world, raw.headers, OFFICIAL, expected)


class TestReceiptsAPI:
    def test_the_user_reads_the_receipt_by_its_request_id(self, world: World) -> None:
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=5
            )
        request_id = raw.headers["x-request-id"]
        truth = world.primary.last.usage
        assert truth is not None
        with world.as_user() as http:
            receipt = http.get(f"/api/receipts/{request_id}").json()
        assert receipt["charge_nanos"] == expected_charge(OFFICIAL, *truth_pair(truth))
        assert receipt["charge_policy"] == "completed:charge_usage"
        assert receipt["channel"] == "Official A" and receipt["backup_used"] is False
        assert receipt["usage_basis"] == "upstream"
        assert receipt["price_version_id"] is not None


def truth_pair(truth: Any) -> tuple[int, int]:
    return int(truth.prompt_tokens), int(truth.completion_tokens)


class TestInternalFailure:
    def test_an_error_inside_the_gateway_after_the_hold_releases_it(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(*_args: Any, **_kwargs: Any) -> bytes:
            raise RuntimeError("a bug between the hold and the upstream call")

        monkeypatch.setattr(proxy, "upstream_body", broken)
        with world.openai() as client, pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=5)
        assert failed.value.code == "internal_error"
        assert "nothing was charged" in failed.value.message
        assert "a bug" not in failed.value.response.text  # nothing internal leaks
        receipt = world.receipt(failed.value.response.headers["x-request-id"])
        assert receipt["status"] == "failed" and receipt["http_status"] == 500
        assert receipt["hold_nanos"] > 0 and receipt["charge_nanos"] == 0
        assert receipt["entry_id"] is None
        assert world.balance() == START_BALANCE and world.held() == 0
        assert len(world.primary.requests) == 0
