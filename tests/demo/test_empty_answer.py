"""``reply_tokens=0``: the demo upstream answers with nothing (zero output tokens, true usage
still reported), streamed or not — the case the gateway's ``empty_output`` policy prices."""

from __future__ import annotations

from typing import Any

from tallygate.demo import tokens
from tests.fixtures.upstream_server import UpstreamServer

MESSAGES: list[Any] = [{"role": "user", "content": "Say nothing."}]


def test_an_empty_answer_with_its_true_usage(upstream: UpstreamServer) -> None:
    upstream.configure(reply_tokens=0)
    with upstream.client() as client:
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
        stream = client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    assert reply.choices[0].message.content == ""
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 0
    assert reply.usage.prompt_tokens == tokens.chat_prompt_tokens(MESSAGES)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    (usage,) = [c.usage for c in chunks if c.usage is not None]
    assert usage.completion_tokens == 0
