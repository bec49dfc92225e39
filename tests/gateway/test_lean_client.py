"""The lean upstream client (tallygate.upstream.lean) on its own, against the real test upstream:
keep-alive reuse after complete answers only, SSE lines, and the failures the gateway classifies
(connect, reset, cut-off, read timeout). Its use on the request path is covered by every other
gateway test (the test upstreams are plain http://)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import orjson
import pytest

from tallygate.upstream.lean import (
    LeanClient,
    UpstreamConnectError,
    UpstreamCutOff,
    UpstreamDisconnected,
)
from tests.fixtures.upstream_server import UPSTREAM_API_KEY, UpstreamServer

AUTH = f"Bearer {UPSTREAM_API_KEY}"


@pytest.fixture
def up(gateway_upstreams: tuple[UpstreamServer, UpstreamServer]) -> Iterator[UpstreamServer]:
    server = gateway_upstreams[0]
    server.reset()
    yield server
    server.reset()


def body(**extra: object) -> bytes:
    return orjson.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hello there"}], **extra}
    )


def test_sequential_calls_reuse_one_connection(up: UpstreamServer) -> None:
    async def go() -> tuple[list[int], int]:
        client = LeanClient()
        statuses, conns = [], set()
        try:
            for _ in range(3):
                resp = await client.post(
                    up.base_url + "/chat/completions",
                    body(max_tokens=3),
                    authorization=AUTH,
                    connect_timeout=2,
                    read_timeout=5,
                )
                conns.add(id(resp.conn))
                data = orjson.loads(await resp.read())
                statuses.append(resp.status)
                assert data["usage"]["completion_tokens"] == 3
            return statuses, len(conns)
        finally:
            await client.close()

    statuses, connections = asyncio.run(go())
    assert statuses == [200, 200, 200]
    assert connections == 1
    assert [r.headers["authorization"] for r in up.requests] == [AUTH] * 3


def test_an_unread_answer_is_not_reused_and_errors_are_readable(up: UpstreamServer) -> None:
    up.fault("http_500", times=1)

    async def go() -> tuple[int, bytes, bool]:
        client = LeanClient()
        try:
            resp = await client.post(
                up.base_url + "/chat/completions",
                body(),
                authorization=AUTH,
                connect_timeout=2,
                read_timeout=5,
            )
            raw = await resp.content.read(64 * 1024)
            resp.release()
            second = await client.post(
                up.base_url + "/chat/completions",
                body(stream=True),
                authorization=AUTH,
                connect_timeout=2,
                read_timeout=5,
            )
            lines = [line async for line in second.content]
            second.close()
            return resp.status, raw, b"data: [DONE]\n" in lines
        finally:
            await client.close()

    status, raw, done = asyncio.run(go())
    assert status == 500 and b"server_error" in raw
    assert done


def test_failures_are_classified(up: UpstreamServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens once closed

    async def go() -> list[str]:
        client = LeanClient()
        seen = []
        try:
            try:
                await client.post(
                    f"http://127.0.0.1:{closed_port}/v1/chat/completions",
                    body(),
                    authorization=None,
                    connect_timeout=1,
                    read_timeout=1,
                )
            except UpstreamConnectError:
                seen.append("connect")
            up.fault("connection_reset", times=1)
            try:
                await client.post(
                    up.base_url + "/chat/completions",
                    body(),
                    authorization=AUTH,
                    connect_timeout=2,
                    read_timeout=5,
                )
            except UpstreamDisconnected:
                seen.append("reset")
            up.fault("slow_first_byte", times=1, delay=2)
            try:
                await client.post(
                    up.base_url + "/chat/completions",
                    body(),
                    authorization=AUTH,
                    connect_timeout=2,
                    read_timeout=0.3,
                )
            except TimeoutError:
                seen.append("timeout")
            up.fault("broken_stream", times=1, chunks=2)
            resp = await client.post(
                up.base_url + "/chat/completions",
                body(stream=True),
                authorization=AUTH,
                connect_timeout=2,
                read_timeout=5,
            )
            try:
                async for _line in resp.content:
                    pass
            except UpstreamCutOff:
                seen.append("cut")
            resp.close()
            return seen
        finally:
            await client.close()

    assert asyncio.run(go()) == ["connect", "reset", "timeout", "cut"]
