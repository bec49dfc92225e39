"""Calling the upstream: channel order, retries and fallback before the first byte, and the
non-streaming answer. Streams continue in ``streaming``."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from typing import Any

import aiohttp
import orjson

from tallygate.billing import service as billing
from tallygate.billing import tokens
from tallygate.gateway import http, streaming
from tallygate.gateway.endpoints import Usage
from tallygate.gateway.handler import (
    RETRYABLE_STATUS,
    Call,
    charge_for,
    cost_fields,
    cost_headers,
    upstream_timeout,
)
from tallygate.gateway.http import Receive, Scope, Send
from tallygate.gateway.snapshot import Channel
from tallygate.routing.health import blames_channel
from tallygate.routing.select import order
from tallygate.upstream.lean import (
    LeanClient,
    LeanResponse,
    UpstreamConnectError,
    UpstreamCutOff,
    UpstreamDisconnected,
)

UpstreamResponse = aiohttp.ClientResponse | LeanResponse

logger = logging.getLogger(__name__)

UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
LARGE_BODY = 1 << 20
"""Bodies above this (image inputs) are streamed to the upstream in chunks (aiohttp's advice:
one large write of raw bytes can hold up the event loop)."""
_URL = re.compile(r"(?:https?|wss?)://\S+")


def upstream_body(call: Call, channel: Channel) -> bytes:
    """The request for this channel: the client's own bytes when nothing needs changing (the
    upstream model id is the one asked for, the output cap is the client's, a stream already
    asks for its usage), else the body re-serialised with the channel's model id, the cap the
    hold covers, and ``stream_options.include_usage``."""
    assert call.model is not None
    upstream_model = channel.models[call.model.name]
    endpoint = call.endpoint
    original = call.body
    recap = endpoint.has_output and (
        call.cap_sent is not None or not any(name in original for name in endpoint.max_fields)
    )
    wants_usage = call.streamed and endpoint.name in ("chat", "completions")
    if (
        upstream_model == original.get("model")
        and not recap
        and (not wants_usage or call.include_usage)
        and call.raw
    ):
        return call.raw
    body = dict(original)
    body["model"] = upstream_model
    if recap:
        present = [name for name in endpoint.max_fields if name in body]
        body[present[0] if present else endpoint.upstream_max_field] = call.max_output
    if wants_usage:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return orjson.dumps(body)


async def _attempt(
    call: Call, channel: Channel, started: float, status: int | None, error: str = ""
) -> None:
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    call.attempts.append(
        {"channel": channel.label, "status": status, "latency_ms": latency_ms, "error": error}
    )
    assert call.model is not None
    await call.rt.health.record(channel.id, call.model.name, not error, latency_ms, error)


def _upstream_message(raw: bytes, status: int) -> str:
    try:
        data = orjson.loads(raw)
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    if not message:
        return f"upstream answered HTTP {status}"
    return _URL.sub("[upstream]", str(message))[:500]


async def forward(call: Call, scope: Scope, receive: Receive, send: Send) -> None:
    rt, model = call.rt, call.model
    assert model is not None
    ordered = order(rt.snapshot.channels_for(model.name, call.route_type), rt.rng)
    if call.owner_channel is not None:
        # Only the channel that created the previous response knows it: no fallback elsewhere
        # (the handler refused the request before its hold when no such channel serves it).
        ordered = [c for c in ordered if c.id == call.owner_channel]
    usable = await rt.health.available([c.id for c in ordered], model.name)
    channels = [c for c, ok in zip(ordered, usable, strict=True) if ok]
    if not channels:
        reason = "every channel's circuit is open" if ordered else "no channel serves it"
        await fail(
            call,
            send,
            503,
            f"the model '{call.api_model_id}' is unavailable right now "
            f"({reason}); try again shortly",
            "model_unavailable",
        )
        return
    call.primary = channels[0].label  # type: ignore[attr-defined]
    suffix = call.endpoint.path[len("/v1") :]
    for channel in channels[: max(1, rt.settings.gateway_max_attempts)]:
        assert isinstance(channel, Channel)
        started = time.perf_counter()
        headers = {"content-type": "application/json"}
        if channel.secret:
            headers["authorization"] = f"Bearer {channel.secret}"
        body = upstream_body(call, channel)
        resp: UpstreamResponse
        try:
            if LeanClient.handles(channel.base_url):
                resp = await rt.lean.post(
                    channel.base_url + suffix,
                    body,
                    authorization=headers.get("authorization"),
                    connect_timeout=min(10, channel.timeout_seconds),
                    read_timeout=channel.timeout_seconds,
                )
            else:
                resp = await rt.session.post(
                    channel.base_url + suffix,
                    data=body if len(body) <= LARGE_BODY else io.BytesIO(body),
                    headers=headers,
                    timeout=upstream_timeout(channel),
                )
        except UPSTREAM_ERRORS as exc:
            await _attempt(call, channel, started, None, _describe(exc))
            continue
        if resp.status in RETRYABLE_STATUS or blames_channel(resp.status):
            # the channel's fault (5xx, 429, its secret refused: decision 0019): the next one
            raw = await _read_quietly(resp)
            await _attempt(call, channel, started, resp.status, _upstream_message(raw, resp.status))
            continue
        if resp.status >= 400:  # the request itself is wrong: no other channel will take it
            raw = await _read_quietly(resp)
            call.attempts.append(
                {
                    "channel": channel.label,
                    "status": resp.status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "error": _upstream_message(raw, resp.status),
                }
            )
            call.channel = channel
            call.upstream_model = channel.models[model.name]
            await fail(
                call,
                send,
                resp.status,
                _upstream_message(raw, resp.status),
                "upstream_rejected",
            )
            return
        call.channel = channel
        call.upstream_model = channel.models[model.name]
        if call.streamed:
            await rt.health.record(
                channel.id, model.name, True, (time.perf_counter() - started) * 1000
            )
            call.attempts.append(
                {
                    "channel": channel.label,
                    "status": resp.status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "error": "",
                }
            )
            await streaming.relay(call, resp, receive, send)
            return
        try:
            raw = await resp.read()
            data = orjson.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (*UPSTREAM_ERRORS, ValueError) as exc:
            resp.release()
            call.channel = None
            await _attempt(
                call, channel, started, resp.status, f"unreadable answer: {_describe(exc)}"
            )
            continue
        await _attempt(call, channel, started, resp.status)
        await _answer(call, send, data)
        return
    call.channel = None
    tried = len(call.attempts)
    await fail(
        call,
        send,
        502,
        f"every upstream channel failed for '{call.api_model_id}' "
        f"({tried} attempt{'s' if tried != 1 else ''}); nothing was charged",
        "upstream_failed",
    )


def _describe(exc: BaseException) -> str:
    """A short, user-safe description: never the upstream's address or a secret."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError | UpstreamConnectError):
        return "could not connect to the upstream"
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | ConnectionResetError | UpstreamDisconnected
    ):
        return "the upstream closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError | UpstreamCutOff):
        return "the upstream's answer was cut off"
    return f"upstream error ({type(exc).__name__})"


async def _read_quietly(resp: UpstreamResponse) -> bytes:
    try:
        return await resp.content.read(64 * 1024)
    except UPSTREAM_ERRORS:
        return b""
    finally:
        resp.release()


async def _answer(call: Call, send: Send, data: dict[str, Any]) -> None:
    endpoint, rt = call.endpoint, call.rt
    usage = endpoint.usage(data)
    basis = "upstream"
    if usage is None:
        basis = "estimated"
        usage = Usage(call.prompt_estimate, tokens.count(endpoint.output_text(data)), 0)
    failure_class, policy_label = "", "completed:charge_usage"
    charge: int | None = charge_for(call, usage)
    if endpoint.has_output and usage.output_tokens == 0:
        failure_class = "empty_output"
        policy_label = rt.snapshot.policy.label(failure_class)
        if rt.snapshot.policy.of(failure_class) == "no_charge":
            charge = None
        else:
            charge = charge_for(call, Usage(usage.input_tokens, 0, usage.cached_tokens))
    receipt = call.receipt(
        "ok",
        200,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        usage_basis=basis,
        failure_class=failure_class,
        charge_policy=policy_label,
    )
    response_id = data.get("id")
    if endpoint.name == "responses" and isinstance(response_id, str) and call.channel:
        # A later previous_response_id must reach the channel that created this response.
        receipt.upstream_response_id = response_id
        rt.remember_response(response_id, call.channel.id)

    def render(done: billing.Finished) -> bytes:
        block = data.get("usage")
        if not isinstance(block, dict):
            block = data["usage"] = _usage_block(call, usage)
        block.update(cost_fields(call, done.charged_nanos))
        return orjson.dumps(data)

    done = await rt.executor.call(
        billing.finish,
        rt.ledger,
        receipt=receipt,
        charge=charge,
        render=render,
        idem_key=call.idem_key,
    )
    call.settled = True
    assert done.body is not None
    await http.send_bytes(send, 200, done.body, cost_headers(call, done))


def _usage_block(call: Call, usage: Usage) -> dict[str, Any]:
    if call.endpoint.name == "responses":
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "estimated": True,
        }
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "estimated": True,
    }


async def fail_inside(call: Call, send: Send) -> None:
    """A bug or an unexpected error inside the gateway after the hold was placed: give the
    hold back (nothing charged), record the failed request and answer 500 — unless the request
    was already settled (then there is nothing to undo)."""
    logger.exception("gateway: request %s failed inside the gateway", call.request_id)
    if call.settled:
        return
    try:
        await fail(
            call,
            send,
            500,
            "the gateway failed while serving this request; nothing was charged",
            "internal_error",
        )
    except Exception:  # noqa: BLE001 - the sweeper expires the hold if even this fails
        logger.exception("gateway: could not release the hold of %s", call.request_id)


async def fail(call: Call, send: Send, status: int, message: str, code: str) -> None:
    """Nothing billable was delivered: release the hold, record the failed request, answer."""
    rt = call.rt
    receipt = call.receipt(
        "failed",
        status,
        failure_class="upstream_error",
        charge_policy=rt.snapshot.policy.label("upstream_error"),
        error_code=code,
        error_message=message,
    )
    done = await rt.executor.call(
        billing.finish, rt.ledger, receipt=receipt, charge=None, idem_key=call.idem_key
    )
    call.settled = True
    headers = cost_headers(call, done)
    await http.send_error(send, status, message, code, None, headers)
