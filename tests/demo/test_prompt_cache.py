"""The demo upstream can report part of each prompt as cached, as a provider with prompt caching
does, so the gateway's cached-input price can be exercised end to end."""

from __future__ import annotations

from typing import Any

from tallygate.demo import tokens
from tests.fixtures.upstream_server import UpstreamServer

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me the same long story again, please."}]


def test_no_cache_by_default(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        usage = client.chat.completions.create(model="m", messages=MESSAGES).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert upstream.last.usage is not None and upstream.last.usage.cached_tokens == 0


def test_chat_stream_completions_and_responses_report_the_cached_part(
    upstream: UpstreamServer,
) -> None:
    upstream.configure(cached_prompt_tokens=5)
    with upstream.client() as client:
        chat = client.chat.completions.create(model="m", messages=MESSAGES).usage
        stream = client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        streamed = [c.usage for c in stream if c.usage is not None][0]
        legacy = client.completions.create(
            model="m", prompt="Once upon a time there was a gateway"
        ).usage
        response = client.responses.create(
            model="m", input="Once upon a time there was a gateway"
        ).usage
    assert chat is not None and chat.prompt_tokens_details is not None
    assert chat.prompt_tokens == tokens.chat_prompt_tokens(MESSAGES)
    assert chat.prompt_tokens_details.cached_tokens == 5
    assert streamed.prompt_tokens_details is not None
    assert streamed.prompt_tokens_details.cached_tokens == 5
    assert legacy is not None and legacy.prompt_tokens_details is not None
    assert legacy.prompt_tokens_details.cached_tokens == 5
    assert response is not None and response.input_tokens_details.cached_tokens == 5
    assert upstream.last.usage is not None and upstream.last.usage.cached_tokens == 5


def test_never_more_than_the_prompt(upstream: UpstreamServer) -> None:
    upstream.configure(cached_prompt_tokens=10_000)
    with upstream.client() as client:
        usage = client.chat.completions.create(model="m", messages=MESSAGES).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens
