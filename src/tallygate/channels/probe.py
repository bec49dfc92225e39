"""A channel test: one minimal real chat completion, timed. The answer names what went wrong
in words and never contains the secret (it is scrubbed even from the upstream's own error
text, which some providers use to echo the key back)."""

from __future__ import annotations

import os
import time
from typing import Any

import aiohttp
import orjson

from tallygate.channels.schemas import ChannelTestResult
from tallygate.channels.service import REDACTED, TestTarget

MAX_ERROR_CHARS = 300


def _scrub(text: str, secret: str) -> str:
    text = text.replace(secret, REDACTED) if secret else text
    return text[:MAX_ERROR_CHARS]


def _upstream_message(body: bytes) -> str:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace").strip()
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return ""


async def run(target: TestTarget) -> ChannelTestResult:
    payload = {
        "model": target.model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    }
    headers = {"Content-Type": "application/json"}
    if target.secret:
        headers["Authorization"] = f"Bearer {target.secret}"
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=target.timeout_seconds)
            ) as http,
            http.post(
                f"{target.base_url}/chat/completions",
                data=orjson.dumps(payload),
                headers=headers,
                allow_redirects=False,
            ) as response,
        ):
            status = response.status
            body = await response.read()
            if not 200 <= status < 300:
                detail = _upstream_message(body)
                error = f"upstream answered HTTP {status}" + (f": {detail}" if detail else "")
            elif not _is_completion(body):
                error = "upstream answered 2xx but not with a chat completion"
    except TimeoutError:
        error = f"no answer within {target.timeout_seconds:g} s (timeout)"
    except aiohttp.ClientConnectorError as exc:
        error = f"could not connect to the channel: {_reason(exc.os_error)}"
    except aiohttp.ClientError as exc:
        error = f"the connection to the channel failed: {type(exc).__name__}"
    latency_ms = int((time.perf_counter() - started) * 1000 + 0.5)
    return ChannelTestResult(
        ok=error is None,
        status=status,
        latency_ms=latency_ms,
        model=target.model,
        error=None if error is None else _scrub(error, target.secret),
    )


def _reason(error: OSError) -> str:
    """ "Connection refused", not asyncio's text (which embeds the address)."""
    if error.errno:
        return os.strerror(error.errno)
    return "connection failed"


def _is_completion(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and isinstance(data.get("choices"), list)
