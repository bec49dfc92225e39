"""A lean keep-alive HTTP/1.1 client for the gateway's hot path: plain-``http://`` upstreams
(local vLLM/Ollama, sidecars, the benchmark's mock) — decision 0005, proposal 1.

One asyncio ``Protocol`` per connection with httptools' response parser, the request written as
one buffer of prebuilt header bytes and the body, idle connections pooled per (host, port) and
reused only after a complete response the server agreed to keep alive. About a third of an
aiohttp call's CPU (bench/gateway/micro.py). ``https://`` and anything unusual stay on aiohttp.

What ``gateway.proxy`` and ``gateway.streaming`` use is the subset of aiohttp's response they
already use: ``status``, ``await read()``, ``content.read(n)``, ``async for line in content``,
``release()`` and ``close()``. Failures are ``ConnectionError`` subclasses (so every existing
``except OSError`` handles them) or ``TimeoutError`` (connect or read timeout)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools


class UpstreamConnectError(ConnectionError):
    """Could not connect to the upstream."""


class UpstreamDisconnected(ConnectionError):
    """The upstream closed or reset the connection before its answer began."""


class UpstreamCutOff(ConnectionError):
    """The upstream's answer ended before it was complete."""


class _Target:
    __slots__ = ("head", "host", "key", "port")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.key = (self.host, self.port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host_header = parts.netloc.rpartition("@")[2]
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n"
            "Content-Type: application/json\r\nAccept: */*\r\n"
        ).encode("latin-1")


class _Connection(asyncio.Protocol):
    def __init__(self, client: LeanClient, key: tuple[str, int]) -> None:
        self.client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: LeanResponse | None = None
        self.lost = False

    # transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: this connection is not reusable
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            response._fail(UpstreamCutOff("the upstream's answer is not valid HTTP"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is not None and not response._done:
            if response.status == 0:
                response._fail(UpstreamDisconnected("the upstream closed the connection"))
            else:
                response._fail(UpstreamCutOff("the upstream's answer was cut off"))

    # parser callbacks

    def on_headers_complete(self) -> None:
        response = self.response
        if response is not None:
            response.status = self.parser.get_status_code()
            response.keep_alive = self.parser.should_keep_alive()
            if not response._head.done():
                response._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response._complete()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class _Content:
    """aiohttp's ``StreamReader`` subset: ``read(n)`` and iteration by lines."""

    __slots__ = ("_response",)

    def __init__(self, response: LeanResponse) -> None:
        self._response = response

    async def read(self, n: int = -1) -> bytes:
        r = self._response
        while not r._done and (n < 0 or len(r._buffer) < n):
            await r._wait()
        size = len(r._buffer) if n < 0 else min(n, len(r._buffer))
        data = bytes(r._buffer[:size])
        del r._buffer[:size]
        return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[bytes]:
        r = self._response
        start = 0
        while True:
            end = r._buffer.find(b"\n", start)
            if end >= 0:
                line = bytes(r._buffer[: end + 1])
                del r._buffer[: end + 1]
                start = 0
                yield line
                continue
            if r._done:
                if r._buffer:
                    line = bytes(r._buffer)
                    r._buffer.clear()
                    yield line
                return
            start = len(r._buffer)
            await r._wait()


class LeanResponse:
    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self.conn = conn
        self.status = 0
        self.keep_alive = False
        self.read_timeout = read_timeout
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        self.content = _Content(self)

    # fed by the connection

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def _complete(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved: no "never retrieved" warning if unawaited
        self._wake()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, self.read_timeout)
        finally:
            self._waiter = None
        if self._error is not None and not self._done:
            raise self._error

    # the aiohttp-like surface

    async def read(self) -> bytes:
        try:
            while not self._done:
                await self._wait()
        except BaseException:
            self.close()
            raise
        data = bytes(self._buffer)
        self._buffer.clear()
        self.release()
        return data

    def release(self) -> None:
        """Back to the pool after a complete answer the server keeps alive; else closed."""
        if self._released:
            return
        self._released = True
        conn = self.conn
        conn.response = None
        if self._done and self.keep_alive and not conn.lost and not self._buffer:
            conn.client._put(conn)
        else:
            conn.close()

    def close(self) -> None:
        if not self._released:
            self._released = True
            self.conn.response = None
            self.conn.close()


class LeanClient:
    """Pooled keep-alive connections to plain-HTTP upstreams."""

    def __init__(self, max_idle_per_host: int = 256) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self.max_idle_per_host = max_idle_per_host
        self._closed = False

    @staticmethod
    def handles(url: str) -> bool:
        return url.startswith("http://")

    def _put(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if self._closed or len(idle) >= self.max_idle_per_host:
            conn.close()
        else:
            idle.append(conn)

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if not conn.lost and transport is not None and not transport.is_closing():
                return conn
        return None

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        authorization: str | None,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> LeanResponse:
        """Send the request; return once the response head has arrived."""
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = _Target(url)
        conn = self._take(target.key)
        if conn is None:
            loop = asyncio.get_running_loop()
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(self, target.key), target.host, target.port
                    ),
                    connect_timeout,
                )
            except OSError as exc:
                raise UpstreamConnectError(str(exc)) from None
            conn = protocol
        response = LeanResponse(conn, read_timeout)
        conn.response = response
        head = target.head
        if authorization:
            head += b"Authorization: " + authorization.encode("latin-1") + b"\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        transport = conn.transport
        assert transport is not None
        try:
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
            await asyncio.wait_for(response._head, read_timeout)
        except BaseException:
            response.close()
            raise
        return response

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                with contextlib.suppress(Exception):
                    conn.close()
        self._idle.clear()
