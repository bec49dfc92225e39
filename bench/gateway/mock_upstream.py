#!/usr/bin/env python3
"""Minimal, fast OpenAI-compatible mock upstream for gateway benchmarks.

(Copied from ../shared/bench/peer/mock_upstream.py; adds GET /stats.)

Raw asyncio Protocol + httptools parser + uvloop (falls back to the stdlib
event loop if uvloop is missing).  Loopback only.

Endpoints
  POST /v1/chat/completions   non-streaming: fixed completion + usage
                              stream=true:   SSE chunks, final usage chunk when
                                             stream_options.include_usage=true,
                                             then `data: [DONE]`
  GET  /v1/models             one model (or the configured list)
  GET  /health                200 "ok"
  GET  /stats                 {"requests": N, "chat": M}: M = chat completions answered so far
                              (the benchmark compares it with the gateway's receipts)

Flags
  --port 9001 --host 127.0.0.1
  --latency-ms N        fixed delay before the response (or first SSE chunk)
  --chunk-delay-ms N    delay between SSE chunks (default 0)
  --chunks N            number of content chunks in a stream (default 8)
"""

import argparse
import asyncio
import os
import sys
import time

try:
    import orjson

    def jdumps(o):
        return orjson.dumps(o)

    jloads = orjson.loads
except ImportError:  # pragma: no cover
    import json

    def jdumps(o):
        return json.dumps(o, separators=(",", ":")).encode()

    jloads = json.loads

import httptools

COMPLETION_TEXT = "Hello! This is a fixed completion from the mock upstream."
PROMPT_TOKENS = 12
COMPLETION_TOKENS = 14

ARGS = None
STATS = {"requests": 0, "chat": 0}


def _resp(
    status: bytes, body: bytes, ctype: bytes = b"application/json", keep_alive: bool = True
) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\n",
            b"content-type: ",
            ctype,
            b"\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\n",
            b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n",
            b"\r\n",
            body,
        )
    )


def _chunk(data: bytes) -> bytes:
    # one HTTP/1.1 chunk
    return b"%x\r\n%s\r\n" % (len(data), data)


def completion_body(model: str) -> bytes:
    return jdumps(
        {
            "id": "chatcmpl-mock0000000000000000",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": COMPLETION_TEXT},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        }
    )


def stream_events(model: str, include_usage: bool, n_chunks: int):
    created = int(time.time())
    base = {
        "id": "chatcmpl-mock0000000000000000",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_mock",
    }
    words = COMPLETION_TEXT.split(" ")
    # spread words over n_chunks pieces
    n = max(1, n_chunks)
    pieces = [
        " ".join(words[i::n]) for i in range(n)
    ]  # content is irrelevant, size is what matters
    ev = []
    first = dict(
        base,
        choices=[
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    )
    if include_usage:
        first["usage"] = None
    ev.append(first)
    for p in pieces:
        c = dict(
            base,
            choices=[
                {"index": 0, "delta": {"content": p + " "}, "logprobs": None, "finish_reason": None}
            ],
        )
        if include_usage:
            c["usage"] = None
        ev.append(c)
    last = dict(
        base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    )
    if include_usage:
        last["usage"] = None
    ev.append(last)
    if include_usage:
        ev.append(
            dict(
                base,
                choices=[],
                usage={
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            )
        )
    return [b"data: " + jdumps(e) + b"\n\n" for e in ev] + [b"data: [DONE]\n\n"]


MODELS_BODY = None
HEALTH = _resp(b"200 OK", b"ok", b"text/plain")
NOT_FOUND = _resp(
    b"404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}'
)
BAD_REQ = _resp(
    b"400 Bad Request", b'{"error":{"message":"bad json","type":"invalid_request_error"}}'
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"connection: keep-alive\r\n\r\n"
)


class Proto(asyncio.Protocol):
    __slots__ = ("t", "p", "url", "body", "prev", "closed")

    def connection_made(self, transport):
        self.t = transport
        self.p = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = []
        self.prev = None  # previous response task (keeps pipelined order)
        self.closed = False

    def connection_lost(self, exc):
        self.closed = True

    def data_received(self, data):
        try:
            self.p.feed_data(data)
        except httptools.HttpParserError:
            self.t.write(BAD_REQ)
            self.t.close()

    # httptools callbacks
    def on_message_begin(self):
        self.url = b""
        self.body = []

    def on_url(self, url):
        self.url += url

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        STATS["requests"] += 1
        method = self.p.get_method()
        path = self.url.split(b"?", 1)[0]
        body = b"".join(self.body)
        if method == b"POST" and path == b"/v1/chat/completions":
            STATS["chat"] += 1
            try:
                req = jloads(body) if body else {}
            except Exception:
                self._send_now(BAD_REQ)
                return
            model = req.get("model") or "mock-model"
            if req.get("stream"):
                so = req.get("stream_options") or {}
                inc = bool(so.get("include_usage"))
                self._schedule(self._stream(model, inc))
            else:
                out = _resp(b"200 OK", completion_body(model))
                if ARGS.latency_ms > 0 or self.prev is not None:
                    self._schedule(self._delayed(out))
                else:
                    self.t.write(out)
        elif method == b"GET" and path == b"/v1/models":
            self._send_now(MODELS_BODY)
        elif path == b"/stats":
            self._send_now(_resp(b"200 OK", jdumps(STATS)))
        elif path in (b"/health", b"/healthz"):
            self._send_now(HEALTH)
        else:
            self._send_now(NOT_FOUND)

    def _send_now(self, out):
        if self.prev is not None:
            self._schedule(self._delayed(out, delay=False))
        else:
            self.t.write(out)

    def _schedule(self, coro):
        prev = self.prev

        async def run():
            if prev is not None:
                await prev
            await coro

        task = asyncio.ensure_future(run())
        self.prev = task

        def done(_):
            if self.prev is task:
                self.prev = None

        task.add_done_callback(done)

    async def _delayed(self, out, delay=True):
        if delay and ARGS.latency_ms > 0:
            await asyncio.sleep(ARGS.latency_ms / 1000.0)
        if not self.closed:
            self.t.write(out)

    async def _stream(self, model, include_usage):
        if ARGS.latency_ms > 0:
            await asyncio.sleep(ARGS.latency_ms / 1000.0)
        if self.closed:
            return
        events = stream_events(model, include_usage, ARGS.chunks)
        cd = ARGS.chunk_delay_ms / 1000.0
        if cd <= 0:
            # send everything in one write: headers + all chunks + terminator
            self.t.write(SSE_HEAD + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n")
            return
        self.t.write(SSE_HEAD + _chunk(events[0]))
        for e in events[1:]:
            await asyncio.sleep(cd)
            if self.closed:
                return
            self.t.write(_chunk(e))
        self.t.write(b"0\r\n\r\n")


def main():
    global ARGS, MODELS_BODY
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--models", default="mock-model,gpt-4o-mini")
    ap.add_argument("--no-uvloop", action="store_true")
    ARGS = ap.parse_args()
    if not ARGS.host.startswith("127.") and ARGS.host not in ("localhost", "::1"):
        sys.exit("mock_upstream: refusing to bind a non-loopback address")
    MODELS_BODY = _resp(
        b"200 OK",
        jdumps(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"}
                    for m in ARGS.models.split(",")
                ],
            }
        ),
    )
    loop_name = "asyncio"
    if not ARGS.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            loop_name = "uvloop"
        except ImportError:
            pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(Proto, ARGS.host, ARGS.port, reuse_address=True, backlog=4096)
    )
    print(
        f"mock_upstream listening on http://{ARGS.host}:{ARGS.port} loop={loop_name} "
        f"latency_ms={ARGS.latency_ms} chunk_delay_ms={ARGS.chunk_delay_ms} pid={os.getpid()}",
        flush=True,
    )
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
