"""The floor: the least a Python gateway on Tallygate's stack does per request, with no billing.

A raw ASGI app on uvicorn (uvloop, httptools, no access log) that reads the request body, POSTs
the same bytes to the upstream through one shared aiohttp session and answers with the
upstream's body (a stream is relayed chunk by chunk). No key check, no JSON parsing, no hold,
no receipt. Tallygate's CPU per request minus this one is what its features cost.

    python bench/gateway/floor_proxy.py --port 9401 --upstream http://127.0.0.1:9101
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

UPSTREAM = ""
SESSION: aiohttp.ClientSession | None = None
JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global SESSION
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                SESSION = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if SESSION is not None:
                    await SESSION.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    assert SESSION is not None
    async with SESSION.post(
        UPSTREAM + scope["path"],
        data=b"".join(chunks),
        headers={"content-type": "application/json"},
    ) as resp:
        if resp.content_type == "text/event-stream":
            await send({"type": "http.response.start", "status": resp.status, "headers": SSE})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await resp.read()
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": JSON + [(b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})


def main() -> None:
    global UPSTREAM
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=9401)
    ap.add_argument("--upstream", default="http://127.0.0.1:9101")
    args = ap.parse_args()
    UPSTREAM = args.upstream.rstrip("/")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
