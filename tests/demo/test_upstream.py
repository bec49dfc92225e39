"""The demo upstream, through the official ``openai`` SDK (sync and async, streaming and not)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import openai
import pytest

from tallygate.demo import tokens
from tallygate.demo.upstream import UpstreamConfig, natural_reply
from tests.fixtures.upstream_server import UpstreamServer

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a demo."},
    {"role": "user", "content": "Tell me about the weather in Lisbon today, please."},
]
PROMPT_TOKENS = tokens.chat_prompt_tokens(MESSAGES)


def test_chat_answers_from_the_prompt_with_true_usage(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        reply = client.chat.completions.create(model="demo-chat", messages=MESSAGES)
    text = reply.choices[0].message.content
    assert text is not None
    assert text.startswith('You said: "Tell me about the weather in Lisbon today, please."')
    assert text.endswith(".")
    assert reply.object == "chat.completion"
    assert reply.model == "demo-chat"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.role == "assistant"
    usage = reply.usage
    assert usage is not None
    assert usage.completion_tokens == tokens.count(text) == upstream.config.reply_tokens
    assert usage.prompt_tokens == PROMPT_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    rec = upstream.last
    assert rec.usage is not None
    assert (rec.usage.prompt_tokens, rec.usage.completion_tokens) == (PROMPT_TOKENS, 40)
    assert rec.usage_reported and rec.completed and rec.status == 200
    assert rec.response_id == reply.id and reply.id.startswith("chatcmpl-")
    assert rec.headers["authorization"] == f"Bearer {upstream.api_key}"
    assert rec.body == {"model": "demo-chat", "messages": MESSAGES}


def test_a_long_message_is_quoted_truncated(upstream: UpstreamServer) -> None:
    long = "word " * 50
    with upstream.client() as client:
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": long}]
        )
    text = reply.choices[0].message.content or ""
    assert text.startswith('You said: "' + "word " * 15 + "word…")
    assert reply.usage is not None
    assert reply.usage.completion_tokens == tokens.count(text)


@pytest.mark.parametrize("limit", [1, 2, 7, 39])
@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_is_respected_exactly(upstream: UpstreamServer, limit: int, param: str) -> None:
    with upstream.client() as client:
        if param == "max_tokens":
            reply = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=limit)
        else:
            reply = client.chat.completions.create(
                model="m", messages=MESSAGES, max_completion_tokens=limit
            )
    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == limit == tokens.count(text)
    full = "".join(natural_reply(tokens.last_user_text(MESSAGES), 40, 16))
    assert full.startswith(text)


def test_max_tokens_above_the_natural_length_stops(upstream: UpstreamServer) -> None:
    upstream.configure(reply_tokens=12)
    with upstream.client() as client:
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=100
        )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert reply.choices[0].message.content == 'You said: "Hi" Here is some more text.'


def test_stream_chunks_concatenate_to_the_reply(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        whole = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=30)
        chunks = list(
            client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=30, stream=True)
        )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks)  # no usage chunk unless asked
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert all(isinstance(p, str) and tokens.count(p) == 1 for p in content)
    text = "".join(p for p in content if p)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices[0].delta.content is None
    assert len(content) == 30 == tokens.count(text)
    rec = upstream.last
    assert rec.stream and rec.chunks_sent == 30 and rec.text_sent == text
    assert not rec.usage_reported  # the client did not ask for it
    assert rec.usage is not None and rec.usage.completion_tokens == 30


def test_stream_usage_chunk_only_with_include_usage(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert last.usage.completion_tokens == tokens.count(text) == 40
    assert last.usage.prompt_tokens == PROMPT_TOKENS
    assert last.usage.total_tokens == PROMPT_TOKENS + 40
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert upstream.last.usage_reported


def test_stream_wire_format(upstream: UpstreamServer) -> None:
    import httpx

    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_tokens": 2,
        "stream_options": {"include_usage": True},
    }
    headers = {"authorization": f"Bearer {upstream.api_key}"}
    with httpx.Client() as http:
        resp = http.post(f"{upstream.base_url}/chat/completions", json=body, headers=headers)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = resp.text.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])
    assert len(events[:-2]) == 1 + 2 + 1 + 1  # role, two tokens, finish, usage


def test_async_chat_and_stream(upstream: UpstreamServer) -> None:
    async def run() -> tuple[str, str, int]:
        async with upstream.async_client() as client:
            whole = await client.chat.completions.create(model="m", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            parts: list[str] = []
            usage = 0
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if chunk.usage is not None:
                    usage = chunk.usage.completion_tokens
            return whole.choices[0].message.content or "", "".join(parts), usage

    whole, streamed, usage = asyncio.run(run())
    assert whole == streamed
    assert usage == tokens.count(streamed) == 40


def test_tools_json_mode_and_images_are_accepted(upstream: UpstreamServer) -> None:
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a thing up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    with upstream.client() as client:
        reply = client.chat.completions.create(
            model="m", messages=messages, tools=tools, response_format={"type": "json_object"}
        )
    assert reply.usage is not None
    image = tokens.image_tokens(messages[0]["content"][1])  # unreadable size: the most tiles
    expected = 3 + 3 + tokens.count("user") + tokens.count("What is in this image?") + image
    assert reply.usage.prompt_tokens == expected
    assert (reply.choices[0].message.content or "").startswith('You said: "What is in this image?"')
    assert upstream.last.body["tools"] == tools


def test_completions(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        whole = client.completions.create(model="m", prompt="Once upon a time", max_tokens=9)
        chunks = list(
            client.completions.create(
                model="m",
                prompt="Once upon a time",
                max_tokens=9,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert whole.object == "text_completion"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == tokens.count("Once upon a time") == 4
    assert whole.usage.completion_tokens == 9 == tokens.count(whole.choices[0].text)
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert streamed == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 9
    assert chunks[-2].choices[0].finish_reason == "length"


def test_embeddings_are_deterministic_unit_vectors(upstream: UpstreamServer) -> None:
    inputs = ["the cat", "a dog that barks"]
    with upstream.client() as client:
        first = client.embeddings.create(model="demo-embedding", input=inputs)  # SDK: base64
        again = client.embeddings.create(
            model="demo-embedding", input=inputs, encoding_format="float"
        )
        sized = client.embeddings.create(model="demo-embedding", input="x", dimensions=64)
    assert [d.index for d in first.data] == [0, 1]
    vectors = [d.embedding for d in first.data]
    assert all(len(v) == 16 for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] != vectors[1]
    for a, b in zip(vectors, (d.embedding for d in again.data), strict=True):
        assert all(
            math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7) for x, y in zip(a, b, strict=True)
        )
    assert first.usage.prompt_tokens == tokens.prompt_tokens(inputs) == 2 + 5
    assert first.usage.total_tokens == first.usage.prompt_tokens
    assert len(sized.data[0].embedding) == 64
    rec = upstream.last
    assert rec.usage is not None and rec.usage.completion_tokens == 0


def test_responses_api_with_previous_response_id(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        first = client.responses.create(model="m", input="Hello there", instructions="Be kind.")
        second = client.responses.create(
            model="m", input="And again?", previous_response_id=first.id, max_output_tokens=5
        )
    assert first.id.startswith("resp_")
    assert first.status == "completed"
    assert first.output_text.startswith('You said: "Hello there"')
    assert first.usage is not None
    assert first.usage.input_tokens == tokens.responses_input_tokens("Be kind.", "Hello there")
    assert first.usage.output_tokens == tokens.count(first.output_text) == 40
    assert first.usage.total_tokens == first.usage.input_tokens + 40
    assert first.previous_response_id is None
    # the earlier response is echoed back, and its conversation billed as input
    assert second.previous_response_id == first.id
    assert second.status == "incomplete"
    assert second.incomplete_details is not None
    assert second.incomplete_details.reason == "max_output_tokens"
    assert second.usage is not None
    assert second.usage.output_tokens == 5 == tokens.count(second.output_text)
    assert second.usage.input_tokens == (
        first.usage.total_tokens + tokens.responses_input_tokens(None, "And again?")
    )
    recs = upstream.requests_to("/responses")
    assert recs[1].body["previous_response_id"] == first.id
    assert recs[1].response_id == second.id


def test_an_unknown_previous_response_id_is_refused(upstream: UpstreamServer) -> None:
    with upstream.client() as client, pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="m", input="Hi", previous_response_id="resp_elsewhere")
    assert err.value.status_code == 400
    assert err.value.code == "previous_response_not_found"


def test_responses_stream(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        events = list(client.responses.create(model="m", input="Stream me", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response  # type: ignore[union-attr]
    assert "".join(deltas) == final.output_text
    assert final.usage is not None and final.usage.output_tokens == len(deltas) == 40
    assert upstream.last.usage_reported


def test_models(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        models = client.models.list()
        one = client.models.retrieve("demo-chat")
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("nope")
    assert [m.id for m in models.data] == ["demo-chat", "demo-embedding"]
    assert one.id == "demo-chat" and one.object == "model"


def test_a_wrong_key_is_401(upstream: UpstreamServer) -> None:
    with openai.OpenAI(base_url=upstream.base_url, api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model="m", messages=MESSAGES)
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"


def test_bad_requests_are_400(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=[])
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=0)


def test_a_restricted_model_list_and_no_key() -> None:
    config = UpstreamConfig(models=("only-this",), reply_tokens=5)
    with UpstreamServer(config) as server, server.client() as client:
        reply = client.chat.completions.create(model="only-this", messages=MESSAGES)
        assert reply.usage is not None and reply.usage.completion_tokens == tokens.count(
            reply.choices[0].message.content or ""
        )
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="other", messages=MESSAGES)
        assert [m.id for m in client.models.list().data] == ["only-this"]


def test_the_demo_app_can_be_mounted_inside_another_app() -> None:
    """``tallygate demo`` can serve the upstream from its own port, under a path prefix."""
    import httpx
    from fastapi import FastAPI

    from tallygate.demo import create_upstream_app

    outer = FastAPI()
    outer.mount("/demo-upstream", create_upstream_app(UpstreamConfig(api_key="k")))

    async def run() -> tuple[int, Any, Any]:
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            headers = {"authorization": "Bearer k"}
            chat = await http.post(
                "/demo-upstream/v1/chat/completions",
                json={"model": "m", "messages": MESSAGES, "max_tokens": 3},
                headers=headers,
            )
            models = await http.get("/demo-upstream/v1/models", headers=headers)
            denied = await http.get("/demo-upstream/v1/models")
            return denied.status_code, chat.json(), models.json()

    denied, chat, models = asyncio.run(run())
    assert denied == 401
    assert chat["usage"]["completion_tokens"] == 3
    assert chat["choices"][0]["message"]["content"] == "You said:"
    assert models["data"][0]["id"] == "demo-chat"
