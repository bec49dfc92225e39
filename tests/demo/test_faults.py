"""Every fault mode of the test upstream, observed from the ``openai`` SDK's side, and the
request record (usage, chunks sent, disconnect time) that gateway tests rely on."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from tallygate.demo import tokens
from tests.fixtures.upstream_server import FaultMode, UpstreamServer

MESSAGES: list[Any] = [{"role": "user", "content": "How long is a piece of string?"}]


def chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=kwargs.pop("model", "m"), messages=MESSAGES, **kwargs
    )


def test_http_500_for_the_next_n_requests(upstream: UpstreamServer) -> None:
    rule = upstream.fault("http_500", times=2)
    with upstream.client() as client:
        for _ in range(2):
            with pytest.raises(openai.InternalServerError) as err:
                chat(client)
            assert err.value.status_code == 500
            assert err.value.type == "server_error"
        assert chat(client).choices[0].finish_reason == "stop"
    assert [r.fault for r in upstream.requests] == [FaultMode.HTTP_500, FaultMode.HTTP_500, None]
    assert [r.status for r in upstream.requests] == [500, 500, 200]
    assert upstream.requests[0].usage is None
    assert rule.hits == 2 and rule.remaining == 0


def test_http_429_with_retry_after(upstream: UpstreamServer) -> None:
    upstream.fault("http_429", retry_after=7)  # every request, until cleared
    with upstream.client() as client:
        for _ in range(3):
            with pytest.raises(openai.RateLimitError) as err:
                chat(client)
            assert err.value.status_code == 429
            assert err.value.response.headers["retry-after"] == "7"
            assert err.value.code == "rate_limit_exceeded"
        upstream.clear_faults()
        chat(client)
    assert [r.status for r in upstream.requests] == [429, 429, 429, 200]


def test_faults_per_model_and_path(upstream: UpstreamServer) -> None:
    upstream.fault("http_500", model="sick")
    upstream.fault("http_429", path="/embeddings", times=1)
    with upstream.client() as client:
        with pytest.raises(openai.InternalServerError):
            chat(client, model="sick")
        chat(client, model="healthy")
        with pytest.raises(openai.RateLimitError):
            client.embeddings.create(model="healthy", input="x")
        client.embeddings.create(model="healthy", input="x")
    assert [(r.model, r.status) for r in upstream.requests] == [
        ("sick", 500),
        ("healthy", 200),
        ("healthy", 429),
        ("healthy", 200),
    ]


def test_timeout_never_answers_until_the_client_gives_up(upstream: UpstreamServer) -> None:
    upstream.fault("timeout", times=1)
    with upstream.client(timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            chat(client)
        gave_up = time.monotonic()
        assert 0.3 <= gave_up - started < 2
        left = upstream.wait_for_disconnect()
        assert started < left and left - gave_up < 0.2
        chat(client)  # the next request is answered
    rec = upstream.request(0)
    assert rec.fault == FaultMode.TIMEOUT and rec.status is None and rec.usage is None


def test_connection_reset_before_any_byte(upstream: UpstreamServer) -> None:
    upstream.fault("connection_reset", times=1)
    with upstream.client() as client:
        with pytest.raises(openai.APIConnectionError) as err:
            chat(client)
        assert not isinstance(err.value, openai.APITimeoutError)
        chat(client)
    rec = upstream.request(0)
    assert rec.status is None and rec.dropped_at is not None and rec.disconnected_at is None


def test_slow_first_byte(upstream: UpstreamServer) -> None:
    upstream.fault("slow_first_byte", delay=0.4, times=2)
    with upstream.client() as client:
        started = time.monotonic()
        chat(client)
        assert time.monotonic() - started >= 0.4
        with pytest.raises(openai.APITimeoutError):
            chat(client, timeout=0.15)
    upstream.wait_for_disconnect(1)
    assert upstream.request(1).status is None


def test_broken_stream_drops_after_k_chunks(upstream: UpstreamServer) -> None:
    upstream.fault("broken_stream", chunks=4, times=1)
    received: list[str] = []
    with upstream.client() as client:
        stream = chat(client, stream=True, stream_options={"include_usage": True})
        with pytest.raises((openai.APIConnectionError, httpx.RemoteProtocolError)):
            for chunk in stream:
                assert chunk.usage is None
                assert chunk.choices[0].finish_reason is None
                received.append(chunk.choices[0].delta.content or "")
    assert len(received) == 1 + 4  # the role chunk, then four tokens
    rec = upstream.wait_until_done()
    assert rec.chunks_sent == 4 and rec.text_sent == "".join(received)
    assert rec.finished_at is None and rec.dropped_at is not None and not rec.usage_reported
    assert rec.usage is not None and rec.usage.completion_tokens == 40  # what it would have been
    assert rec.completion_tokens_sent == 4


def test_broken_non_stream_response(upstream: UpstreamServer) -> None:
    upstream.fault("broken_stream", times=1)
    with upstream.client() as client, pytest.raises(openai.APIConnectionError):
        chat(client)
    assert upstream.last.completion_tokens_sent == 0


def test_no_usage_even_when_asked(upstream: UpstreamServer) -> None:
    upstream.fault("no_usage")
    with upstream.client() as client:
        chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
        whole = chat(client, max_tokens=10)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert whole.usage is None
    rec = upstream.request(0)
    assert not rec.usage_reported and rec.completed
    # the truth is still known to the test
    assert rec.usage is not None and rec.usage.completion_tokens == tokens.count(text) == 40
    assert upstream.request(1).usage is not None
    assert upstream.request(1).usage.completion_tokens == 10  # type: ignore[union-attr]


def test_fixed_delay_answers_exactly_max_tokens_concurrently(upstream: UpstreamServer) -> None:
    upstream.fault("fixed_delay", delay=0.3)

    async def run() -> list[Any]:
        async with upstream.async_client() as client:
            calls = [
                client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=7)
                for _ in range(20)
            ]
            return await asyncio.gather(*calls)

    started = time.monotonic()
    replies = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3.0  # in parallel: one after another would take 6 s
    for reply in replies:
        assert reply.usage.completion_tokens == 7
        assert tokens.count(reply.choices[0].message.content) == 7
        assert reply.choices[0].finish_reason == "length"
    recs = upstream.requests
    assert len(recs) == 20 and all(r.fault == FaultMode.FIXED_DELAY for r in recs)
    assert all(r.finished_at is not None and r.finished_at - r.arrived_at >= 0.3 for r in recs)


def test_ignore_max_tokens_overruns(upstream: UpstreamServer) -> None:
    upstream.fault("ignore_max_tokens", times=1)
    with upstream.client() as client:
        reply = chat(client, max_tokens=5)
    assert reply.usage.completion_tokens == 40 == tokens.count(reply.choices[0].message.content)


def _stream_and_close(upstream: UpstreamServer, after: int) -> tuple[float, float]:
    with upstream.client() as client:
        stream = chat(client, stream=True, stream_options={"include_usage": True})
        for n, _chunk in enumerate(stream, start=1):
            if n == after:
                break
        closed = time.monotonic()
        stream.close()
    return closed, upstream.wait_for_disconnect()


def test_disconnect_is_noticed_within_200ms(upstream: UpstreamServer) -> None:
    upstream.fault("slow_stream", chunk_delay=0.05)
    closed, noticed = _stream_and_close(upstream, after=4)
    assert 0 <= noticed - closed < 0.2
    rec = upstream.last
    assert rec.finished_at is None and rec.dropped_at is None
    assert 3 <= rec.chunks_sent <= 5  # the server stopped sending (40 tokens were due)
    assert rec.completion_tokens_sent == rec.chunks_sent
    time.sleep(0.15)
    assert upstream.last.chunks_sent == rec.chunks_sent


def test_disconnect_from_an_async_client(upstream: UpstreamServer) -> None:
    upstream.configure(chunk_delay=0.05)  # a config change, not a fault: every stream is slow

    async def run() -> float:
        async with upstream.async_client() as client:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            n = 0
            async for _chunk in stream:
                n += 1
                if n == 3:
                    break
            closed = time.monotonic()
            await stream.close()
            return closed

    closed = asyncio.run(run())
    noticed = upstream.wait_for_disconnect()
    assert 0 <= noticed - closed < 0.2
    assert upstream.last.fault is None and upstream.last.chunks_sent < 40


def test_a_completed_stream_records_no_disconnect(upstream: UpstreamServer) -> None:
    with upstream.client() as client:
        list(chat(client, stream=True))
    rec = upstream.wait_until_done()
    assert rec.completed and rec.disconnected_at is None and rec.chunks_sent == 40


def test_config_latency_and_reset(upstream: UpstreamServer) -> None:
    upstream.configure(latency=0.2, reply_tokens=20)
    upstream.fault("http_500")
    with upstream.client() as client:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError):
            chat(client)
        assert time.monotonic() - started >= 0.2
        upstream.reset()
        assert len(upstream) == 0 and upstream.faults == []
        assert upstream.config.reply_tokens == 40 and upstream.config.latency == 0
        assert chat(client).usage.completion_tokens == 40


def test_stop_ends_a_hanging_request_promptly() -> None:
    server = UpstreamServer().start()
    server.fault("timeout")
    with httpx.Client(timeout=30) as http:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                http.post(f"{server.base_url}/chat/completions", json={"model": "m"})
            except httpx.HTTPError as exc:  # the server going away
                errors.append(exc)

        t = threading.Thread(target=call)
        t.start()
        server.wait_for_requests(1)
        started = time.monotonic()
        server.stop()
        t.join(5)
    assert time.monotonic() - started < 3
    assert not t.is_alive()
    assert len(errors) == 1
    assert server.request(0).dropped_at is not None
