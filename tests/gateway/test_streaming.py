"""Streams: chunks are relayed as they come, the usage chunk reaches only clients that asked for
it (with the cost), and every way a stream can end — completed, client gone, upstream broken,
no usage, overrunning the hold — is charged per docs/billing.md."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import openai
import pytest

from tests.fixtures.gateway import (
    OFFICIAL,
    OFFICIAL_CHAT,
    ROUTED,
    ROUTED_CHAT,
    START_BALANCE,
    World,
    as_decimal,
    expected_charge,
)

MESSAGES: list[Any] = [{"role": "user", "content": "Stream me a story about balanced books."}]


def sse_payloads(text: str) -> list[Any]:
    """The JSON payloads of an SSE body (``[DONE]`` as the string), numbers as decimals."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data, parse_float=Decimal))
    return out


def assert_receipt_is_the_entry(world: World, receipt: dict[str, Any], charge: int) -> None:
    assert receipt["charge_nanos"] == charge
    assert world.user_debit(receipt["entry_id"]) == charge
    assert receipt["charge_nanos"] <= receipt["hold_nanos"]


class TestCompletedStreams:
    def test_chunks_arrive_and_the_usage_chunk_carries_the_exact_cost(self, world: World) -> None:
        body = {
            "model": OFFICIAL_CHAT,
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 25,
        }
        with world.http() as http:
            response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        truth = world.primary.last.usage
        assert truth is not None and truth.completion_tokens == 25
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)

        payloads = sse_payloads(response.text)
        assert payloads[-1] == "[DONE]"
        usage_chunk = payloads[-2]
        assert usage_chunk["choices"] == []
        usage = usage_chunk["usage"]
        assert usage["prompt_tokens"] == truth.prompt_tokens
        assert usage["completion_tokens"] == truth.completion_tokens
        assert usage["cost_nanos"] == expected
        assert usage["cost"] == as_decimal(expected)
        assert usage["cost_currency"] == "USD" and usage["bucket"] == "credit"
        assert usage["balance_after"] == as_decimal(START_BALANCE - expected)
        text = "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in payloads[:-2]
            if isinstance(c, dict) and c["choices"]
        )
        assert text == world.primary.last.text

        receipt = world.receipt(response.headers["x-request-id"])
        assert receipt["streamed"] and receipt["usage_basis"] == "upstream"
        assert_receipt_is_the_entry(world, receipt, expected)
        assert world.balance() == START_BALANCE - expected

    def test_without_include_usage_no_usage_chunk_reaches_the_client(self, world: World) -> None:
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=ROUTED_CHAT, messages=MESSAGES, stream=True
            )
            request_id = stream.response.headers["x-request-id"]
            chunks = list(stream)
        assert chunks and all(chunk.usage is None for chunk in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
        upstream = world.primary.last
        assert upstream.body["stream_options"] == {"include_usage": True}  # asked all the same
        assert upstream.usage is not None
        expected = expected_charge(
            ROUTED, upstream.usage.prompt_tokens, upstream.usage.completion_tokens
        )
        assert_receipt_is_the_entry(world, world.receipt(request_id), expected)
        assert world.balance(bucket="routed") == START_BALANCE - expected

    def test_an_async_stream_is_billed_from_the_upstream_usage(self, world: World) -> None:
        async def call() -> tuple[str, list[Any]]:
            async with world.async_openai() as client:
                stream = await client.chat.completions.create(
                    model=OFFICIAL_CHAT,
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                return stream.response.headers["x-request-id"], [c async for c in stream]

        request_id, chunks = asyncio.run(call())
        truth = world.primary.last.usage
        assert truth is not None
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)
        usage = chunks[-1].usage
        assert usage is not None and usage.model_extra is not None
        assert usage.model_extra["cost_nanos"] == expected
        assert_receipt_is_the_entry(world, world.receipt(request_id), expected)

    def test_a_responses_stream_carries_the_cost_in_its_completed_event(self, world: World) -> None:
        with world.openai() as client:
            stream = client.responses.create(
                model=OFFICIAL_CHAT, input="Stream a short note", stream=True
            )
            request_id = stream.response.headers["x-request-id"]
            events = list(stream)
        assert events[-1].type == "response.completed"
        truth = world.primary.last.usage
        assert truth is not None
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)
        usage = events[-1].response.usage  # type: ignore[union-attr]
        assert usage is not None and usage.model_extra is not None
        assert usage.model_extra["cost_nanos"] == expected
        assert_receipt_is_the_entry(world, world.receipt(request_id), expected)


class TestClientDisconnect:
    def disconnect_after_a_few_chunks(self, world: World) -> tuple[str, float]:
        """Read the head and three chunks of a slow stream, then hang up."""
        world.primary.fault("slow_stream", chunk_delay=0.1, times=1)
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=OFFICIAL_CHAT, messages=MESSAGES, stream=True
            )
            request_id = stream.response.headers["x-request-id"]
            for _, _chunk in zip(range(4), stream, strict=False):
                pass
            stream.close()
            closed_at = time.monotonic()
        return request_id, closed_at

    def test_the_upstream_is_cancelled_and_only_what_was_received_is_charged(
        self, world: World
    ) -> None:
        request_id, closed_at = self.disconnect_after_a_few_chunks(world)

        assert world.primary.wait_for_disconnect(-1) - closed_at < 0.2
        receipt = world.receipt(request_id)
        upstream = world.primary.last
        assert upstream.usage is not None
        assert 3 <= upstream.completion_tokens_sent < upstream.usage.completion_tokens
        expected = expected_charge(
            OFFICIAL, upstream.usage.prompt_tokens, upstream.completion_tokens_sent
        )
        assert receipt["client_disconnected"]
        assert receipt["status"] == "partial"
        assert receipt["failure_class"] == "client_abort"
        assert receipt["charge_policy"] == "client_abort:charge_received"
        assert receipt["output_tokens"] == upstream.completion_tokens_sent
        assert_receipt_is_the_entry(world, receipt, expected)
        assert world.balance() == START_BALANCE - expected

    def test_the_operators_no_charge_policy_makes_a_disconnect_free(self, world: World) -> None:
        world.set_charge_policy(client_abort="no_charge")

        request_id, closed_at = self.disconnect_after_a_few_chunks(world)

        assert world.primary.wait_for_disconnect(-1) - closed_at < 0.2
        receipt = world.receipt(request_id)
        assert receipt["client_disconnected"]
        assert receipt["charge_policy"] == "client_abort:no_charge"
        assert receipt["charge_nanos"] == 0 and receipt["entry_id"] is None
        assert world.entries_for(request_id) == []
        assert world.balance() == START_BALANCE

    def test_closing_the_http_response_early_cancels_the_upstream(self, world: World) -> None:
        world.primary.fault("slow_stream", chunk_delay=0.1, times=1)
        body = {"model": ROUTED_CHAT, "messages": MESSAGES, "stream": True}
        with world.http() as http:
            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                request_id = response.headers["x-request-id"]
                data_lines = 0
                for line in response.iter_lines():
                    data_lines += line.startswith("data: ")
                    if data_lines == 4:
                        break
            closed_at = time.monotonic()
        assert world.primary.wait_for_disconnect(-1) - closed_at < 0.2
        upstream = world.primary.last
        assert upstream.usage is not None
        expected = expected_charge(
            ROUTED, upstream.usage.prompt_tokens, upstream.completion_tokens_sent
        )
        assert_receipt_is_the_entry(world, world.receipt(request_id), expected)


class TestBrokenUpstream:
    def test_a_stream_broken_mid_way_charges_what_was_received_and_says_so(
        self, world: World
    ) -> None:
        world.primary.fault("broken_stream", chunks=4, times=1)
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=OFFICIAL_CHAT, messages=MESSAGES, stream=True
            )
            request_id = stream.response.headers["x-request-id"]
            received = []
            with pytest.raises(openai.APIError, match="upstream stream broke|ended without"):
                for chunk in stream:
                    received.append(chunk)
        assert "".join(c.choices[0].delta.content or "" for c in received) == (
            world.primary.last.text_sent
        )
        upstream = world.primary.last
        assert upstream.usage is not None and upstream.completion_tokens_sent == 4
        expected = expected_charge(OFFICIAL, upstream.usage.prompt_tokens, 4)
        receipt = world.receipt(request_id)
        assert receipt["status"] == "partial"
        assert receipt["charge_policy"] == "broken_stream:charge_received"
        assert not receipt["client_disconnected"]
        assert_receipt_is_the_entry(world, receipt, expected)

    def test_no_charge_policy_for_broken_streams(self, world: World) -> None:
        world.set_charge_policy(broken_stream="no_charge")
        world.primary.fault("broken_stream", chunks=4, times=1)
        with world.http() as http:
            response = http.post(
                "/v1/chat/completions",
                json={"model": OFFICIAL_CHAT, "messages": MESSAGES, "stream": True},
            )
        error = [p for p in sse_payloads(response.text) if isinstance(p, dict) and "error" in p]
        assert error[0]["error"]["code"] == "upstream_stream_broken"
        receipt = world.receipt(response.headers["x-request-id"])
        assert receipt["charge_policy"] == "broken_stream:no_charge"
        assert receipt["charge_nanos"] == 0 and receipt["entry_id"] is None
        assert world.balance() == START_BALANCE


class TestMissingUsage:
    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    def test_without_upstream_usage_the_tokens_are_estimated_within_ten_percent(
        self, world: World, stream: bool
    ) -> None:
        world.primary.fault("no_usage", times=1)
        world.primary.configure(reply_tokens=120)
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT,
                messages=[{"role": "user", "content": "A longer prompt " * 20}],
                stream=stream,
            )
            if stream:
                list(raw.parse())  # type: ignore[call-overload]
        truth = world.primary.last.usage
        assert truth is not None and not world.primary.last.usage_reported
        receipt = world.receipt(raw.headers["x-request-id"])
        assert receipt["usage_basis"] == "estimated"
        assert (
            abs(receipt["output_tokens"] - truth.completion_tokens) <= 0.1 * truth.completion_tokens
        )
        assert abs(receipt["input_tokens"] - truth.prompt_tokens) <= 0.1 * truth.prompt_tokens
        charge = expected_charge(OFFICIAL, receipt["input_tokens"], receipt["output_tokens"])
        assert_receipt_is_the_entry(world, receipt, charge)


class TestOverrun:
    def test_an_upstream_ignoring_max_tokens_is_cut_at_the_hold(self, world: World) -> None:
        world.primary.fault("ignore_max_tokens", times=1)
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=OFFICIAL_CHAT,
                messages=MESSAGES,
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
            request_id = stream.response.headers["x-request-id"]
            chunks = list(stream)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "length"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(world.primary.last.text) > len(text)  # the upstream would have gone on
        truth = world.primary.last.usage
        assert truth is not None and truth.completion_tokens > 6
        receipt = world.receipt(request_id)
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, 6)
        assert receipt["output_tokens"] == 6
        assert_receipt_is_the_entry(world, receipt, expected)
        assert receipt["charge_nanos"] <= receipt["hold_nanos"]
