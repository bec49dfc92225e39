"""Tools, JSON mode and image inputs pass through untouched, with the official ``openai`` SDK,
and are billed from the upstream's true usage (tests/fixtures/upstream_server.py answers them the
way OpenAI does: tool calls in the message and as indexed stream deltas, JSON content, images
counted per 512-px tile).

Every expected charge is computed here from the world's prices and the upstream's true usage;
image token counts are computed here from the image sizes, independently of the gateway."""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import zlib
from typing import Any

import pytest

from tests.fixtures.gateway import (
    OFFICIAL,
    OFFICIAL_CHAT,
    ROUTED,
    ROUTED_CHAT,
    START_BALANCE,
    World,
    expected_charge,
)

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
CLOCK: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "hours24": {"type": "boolean"}},
            "required": ["city", "hours24"],
        },
    },
}


def png(width: int, height: int, *, noise: bool = False) -> bytes:
    """A real PNG (RGB, 8-bit) of the given size: flat grey, or random noise (incompressible)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = bytes(3 * width)
    pixels = b"".join(b"\x00" + (os.urandom(3 * width) if noise else row) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(pixels, 1))
        + chunk(b"IEND", b"")
    )


def data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def openai_image_tokens(width: int, height: int, detail: str) -> int:
    """OpenAI's published rule, computed here: 85 at low detail; otherwise scale to fit
    2048 × 2048, then the shortest side to 768, and add 170 per 512-px tile."""
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def check_billed(world: World, request_id: str, prices: Any = OFFICIAL) -> dict[str, Any]:
    """The receipt charges the upstream's true usage, and its ledger entry took exactly that."""
    truth = world.primary.last.usage
    assert truth is not None
    receipt = world.receipt(request_id)
    expected = expected_charge(prices, truth.prompt_tokens, truth.completion_tokens)
    assert receipt["status"] == "ok" and receipt["usage_basis"] == "upstream"
    assert receipt["input_tokens"] == truth.prompt_tokens
    assert receipt["output_tokens"] == truth.completion_tokens
    assert receipt["charge_nanos"] == expected and receipt["overrun_nanos"] == 0
    assert receipt["hold_nanos"] >= expected
    user = world.user
    assert world.user_debit(receipt["entry_id"], user) == expected
    return receipt


class TestTools:
    def test_a_tool_call_comes_back_as_sent_and_is_billed_from_true_usage(
        self, world: World
    ) -> None:
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT,
                messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                tools=[WEATHER],  # type: ignore[list-item]
                tool_choice="auto",
            )
        reply = raw.parse()
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        calls = choice.message.tool_calls
        assert calls is not None and len(calls) == 1
        call = calls[0]
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {  # type: ignore[union-attr]
            "location": "Paris",
            "unit": "celsius",
        }
        sent = world.primary.last.body
        assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "auto"
        assert sent["messages"] == [{"role": "user", "content": "What is the weather in Paris?"}]
        check_billed(world, raw.headers["x-request-id"])
        assert reply.usage is not None
        assert reply.usage.completion_tokens == world.primary.last.usage.completion_tokens  # type: ignore[union-attr]

    def test_parallel_tool_calls_stream_as_indexed_deltas(self, world: World) -> None:
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=ROUTED_CHAT,
                messages=[{"role": "user", "content": "Call get_weather and get_time for Tokyo"}],
                tools=[WEATHER, CLOCK],  # type: ignore[list-item]
                stream=True,
                stream_options={"include_usage": True},
            )
            request_id = stream.response.headers["x-request-id"]
            calls: dict[int, dict[str, str]] = {}
            finish, usage = None, None
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or []:
                        slot = calls.setdefault(delta.index, {"id": "", "name": "", "args": ""})
                        if delta.id:
                            slot["id"] = delta.id
                        if delta.function and delta.function.name:
                            slot["name"] += delta.function.name
                        if delta.function and delta.function.arguments:
                            slot["args"] += delta.function.arguments
        assert finish == "tool_calls"
        assert sorted(calls) == [0, 1]
        assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
        assert all(calls[i]["id"].startswith("call_") for i in (0, 1))
        assert json.loads(calls[0]["args"]) == {"location": "Tokyo", "unit": "celsius"}
        assert json.loads(calls[1]["args"]) == {"city": "Tokyo", "hours24": True}
        sent = world.primary.last.body
        assert sent["tools"] == [WEATHER, CLOCK]
        receipt = check_billed(world, request_id, ROUTED)
        assert receipt["streamed"] == 1
        assert usage is not None
        extra = usage.model_dump()
        assert extra["cost_nanos"] == receipt["charge_nanos"] and extra["bucket"] == "routed"

    def test_a_tool_result_is_passed_on_and_answered(self, world: World) -> None:
        messages: list[Any] = [
            {"role": "user", "content": "What is the weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location":"Oslo","unit":"celsius"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "4 degrees and snowing"},
        ]
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT,
                messages=messages,
                tools=[WEATHER],  # type: ignore[list-item]
            )
        reply = raw.parse()
        assert reply.choices[0].finish_reason == "stop"
        assert reply.choices[0].message.content == "The tool answered: 4 degrees and snowing"
        assert world.primary.last.body["messages"] == messages
        check_billed(world, raw.headers["x-request-id"])

    def test_streamed_tool_calls_without_usage_are_estimated_within_10_percent(
        self, world: World
    ) -> None:
        world.primary.fault("no_usage", times=1)
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=OFFICIAL_CHAT,
                messages=[{"role": "user", "content": "Weather for Lisbon with get_weather"}],
                tools=[WEATHER],  # type: ignore[list-item]
                stream=True,
            )
            request_id = stream.response.headers["x-request-id"]
            args = "".join(
                d.function.arguments or ""
                for c in stream
                for ch in c.choices
                for d in ch.delta.tool_calls or []
                if d.function
            )
        assert json.loads(args)["location"] == "Lisbon"
        truth = world.primary.last.usage
        assert truth is not None and not world.primary.last.usage_reported
        receipt = world.receipt(request_id)
        assert receipt["usage_basis"] == "estimated"
        assert abs(receipt["output_tokens"] - truth.completion_tokens) <= max(
            1, truth.completion_tokens // 10
        )
        assert abs(receipt["input_tokens"] - truth.prompt_tokens) <= truth.prompt_tokens // 10
        assert receipt["charge_nanos"] == expected_charge(
            OFFICIAL, receipt["input_tokens"], receipt["output_tokens"]
        )
        assert world.user_debit(receipt["entry_id"]) == receipt["charge_nanos"]


class TestJsonMode:
    def test_json_object_mode_passes_through_and_answers_json(self, world: World) -> None:
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT,
                messages=[
                    {"role": "system", "content": "Answer in JSON."},
                    {"role": "user", "content": "Give me a greeting"},
                ],
                response_format={"type": "json_object"},
            )
        content = raw.parse().choices[0].message.content
        assert content is not None
        assert isinstance(json.loads(content)["reply"], str)
        assert world.primary.last.body["response_format"] == {"type": "json_object"}
        check_billed(world, raw.headers["x-request-id"])

    def test_a_json_schema_answer_streams_and_is_billed(self, world: World) -> None:
        schema = {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "population": {"type": "integer"},
                "capital": {"type": "boolean"},
            },
            "required": ["city", "population", "capital"],
            "additionalProperties": False,
        }
        response_format: Any = {
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        }
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=OFFICIAL_CHAT,
                messages=[{"role": "user", "content": "Describe Berlin"}],
                response_format=response_format,
                stream=True,
            )
            request_id = stream.response.headers["x-request-id"]
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        answer = json.loads(text)
        assert set(answer) == {"city", "population", "capital"}
        assert isinstance(answer["population"], int) and answer["capital"] is True
        assert world.primary.last.body["response_format"] == response_format
        check_billed(world, request_id)


def _prompt_without_images(world: World, text: str) -> int:
    """The true prompt size of the same message with its text only, asked of the upstream."""
    with world.primary.client() as upstream:
        usage = upstream.chat.completions.create(
            model="count", messages=[{"role": "user", "content": text}], max_tokens=1
        ).usage
    assert usage is not None
    return usage.prompt_tokens


class TestImages:
    @pytest.mark.parametrize(
        ("width", "height", "detail"),
        [(64, 64, "low"), (1024, 1024, "high"), (3000, 1000, "auto"), (300, 200, "high")],
    )
    def test_image_parts_pass_byte_for_byte_and_count_like_openai(
        self, world: World, width: int, height: int, detail: str
    ) -> None:
        text = "What is in this picture?"
        uri = data_uri(png(width, height))
        image_part = {"type": "image_url", "image_url": {"url": uri, "detail": detail}}
        content: Any = [{"type": "text", "text": text}, image_part]
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=[{"role": "user", "content": content}], max_tokens=20
            )
        assert raw.parse().choices[0].message.content
        sent = world.primary.last
        assert sent.body["messages"][0]["content"] == content  # the data: URI untouched
        request_id = raw.headers["x-request-id"]
        receipt = check_billed(world, request_id)
        assert sent.usage is not None
        image = sent.usage.prompt_tokens - _prompt_without_images(world, text)
        assert image == openai_image_tokens(width, height, detail)
        assert receipt["input_tokens"] == sent.usage.prompt_tokens

    def test_a_large_image_is_held_by_its_tiles_not_its_encoded_size(self, world: World) -> None:
        # ~1 MB of base64: counted as text it would hold ~260k prompt tokens (≈ 0.65 USD);
        # counted as OpenAI counts a 512 × 512 image it is 255 tokens.
        uri = data_uri(png(512, 512, noise=True))
        assert len(uri) > 900_000
        user = world.new_user(credit=10_000_000)  # 0.01 USD
        _, key = world.new_key(user)
        content: Any = [
            {"type": "text", "text": "Describe it"},
            {"type": "image_url", "image_url": {"url": uri}},
        ]
        with world.openai(key) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=[{"role": "user", "content": content}], max_tokens=20
            )
        assert raw.parse().choices[0].message.content
        truth = world.primary.last.usage
        assert truth is not None
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)
        receipt = world.receipt(raw.headers["x-request-id"])
        assert receipt["charge_nanos"] == expected and receipt["overrun_nanos"] == 0
        assert receipt["hold_nanos"] < 10_000_000
        assert world.user_debit(receipt["entry_id"], user) == expected
        assert world.balance(user) == 10_000_000 - expected
        assert world.balance() == START_BALANCE  # the world's own user paid nothing
