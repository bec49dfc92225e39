"""Streaming: forward upstream SSE events as they arrive, meter the output against the hold,
hold back the usage event until the charge is settled, and cut cleanly on a client disconnect
(the upstream call is cancelled at once) or a broken upstream stream.

Charging follows the operator's charge policy (billing/charge_policy.py); tokens that did not
reach us from the upstream are never charged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tallygate.billing import service as billing
from tallygate.billing import tokens
from tallygate.gateway.endpoints import Usage
from tallygate.gateway.handler import Call, charge_for, cost_fields
from tallygate.gateway.http import Receive, Send
from tallygate.upstream.lean import LeanResponse

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
NORMAL, CLIENT_ABORT, BROKEN, CUT = "normal", "client_abort", "broken_stream", "cut"


@dataclass(slots=True)
class Pump:
    output_tokens: int = 0
    usage: Usage | None = None
    usage_event: dict[str, Any] | None = None
    usage_event_name: bytes | None = None
    done_seen: bool = False
    first_token_at: float | None = None
    ended: str = NORMAL
    error: str = ""


async def _watch_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def relay(
    call: Call, resp: aiohttp.ClientResponse | LeanResponse, receive: Receive, send: Send
) -> None:
    offer = call.offer
    assert offer is not None
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": SSE_HEADERS
            + [
                (b"x-request-id", call.request_id.encode()),
                (b"x-tallygate-currency", offer.price.currency.encode()),
                (b"x-tallygate-bucket", offer.bucket.encode()),
            ]
            + call.headers,
        }
    )
    state = Pump()
    pump = asyncio.create_task(_pump(call, resp, send, state))
    watcher = asyncio.create_task(_watch_disconnect(receive))
    await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
    client_gone = watcher.done() and not pump.done()
    if client_gone:
        state.ended = CLIENT_ABORT
    for task in (pump, watcher):
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if pump.done() and not pump.cancelled() and pump.exception() is not None:
        state.ended, state.error = CLIENT_ABORT, "client went away while sending"
        client_gone = True
    resp.close()  # closes the upstream connection at once if it is still open
    done = await _settle(call, state)
    if client_gone:
        return
    await _finish_stream(call, send, state, done)


async def _pump(
    call: Call, resp: aiohttp.ClientResponse | LeanResponse, send: Send, state: Pump
) -> None:
    endpoint = call.endpoint
    event_name: bytes | None = None
    try:
        async for raw in resp.content:
            line = raw.rstrip(b"\r\n")
            if not line:
                await send({"type": "http.response.body", "body": b"\n", "more_body": True})
                event_name = None
                continue
            if line.startswith(b"event:"):
                event_name = line
                if line.strip() == b"event: response.completed":
                    continue  # held back with its data line
                await send({"type": "http.response.body", "body": line + b"\n", "more_body": True})
                continue
            if not line.startswith(b"data:"):
                await send({"type": "http.response.body", "body": line + b"\n", "more_body": True})
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                state.done_seen = True
                break
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                chunk = None
            if isinstance(chunk, dict):
                usage = endpoint.usage(chunk)
                if usage is not None:
                    state.usage = usage
                    if not chunk.get("choices") or chunk.get("type") == "response.completed":
                        state.usage_event, state.usage_event_name = chunk, event_name
                        if chunk.get("type") == "response.completed":
                            state.done_seen = True
                        continue
                text = endpoint.output_text(chunk)
                if text:
                    if state.first_token_at is None:
                        state.first_token_at = time.perf_counter()
                    state.output_tokens += tokens.count(text)
                    if endpoint.has_output and state.output_tokens > call.max_output:
                        state.output_tokens = call.max_output
                        state.ended = CUT
                        return
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + payload + b"\n",
                    "more_body": True,
                }
            )
        if not state.done_seen:
            state.ended, state.error = BROKEN, "the upstream stream ended without completing"
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        state.ended = BROKEN
        state.error = f"the upstream stream broke: {type(exc).__name__}"


def _usage_for(call: Call, state: Pump) -> tuple[Usage, str]:
    """What was received, and on what basis."""
    if state.usage is not None and state.ended in (NORMAL,):
        return state.usage, "upstream"
    return Usage(call.prompt_estimate, state.output_tokens, 0), "estimated"


async def _settle(call: Call, state: Pump) -> billing.Finished:
    rt = call.rt
    policy = rt.snapshot.policy
    usage, basis = _usage_for(call, state)
    failure_class = ""
    label = "completed:charge_usage"
    status, http_status = "ok", 200
    charge: int | None = charge_for(call, usage)
    if state.ended in (CLIENT_ABORT, BROKEN):
        failure_class = state.ended
        label = policy.label(failure_class)
        status = "partial"
        if policy.of(failure_class) == "no_charge":
            charge = None
    elif state.ended == CUT:
        label = "completed:charge_usage (cut at the hold)"
    if call.endpoint.has_output and usage.output_tokens == 0 and charge is not None:
        failure_class = failure_class or "empty_output"
        label = policy.label("empty_output")
        if policy.of("empty_output") == "no_charge":
            charge = None
        else:
            charge = charge_for(call, Usage(usage.input_tokens, 0, usage.cached_tokens))
    ttft = (
        int((state.first_token_at - call.started) * 1e6)
        if state.first_token_at is not None
        else None
    )
    receipt = call.receipt(
        status,
        http_status,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        usage_basis=basis,
        failure_class=failure_class,
        charge_policy=label,
        ttft_us=ttft,
        client_disconnected=int(state.ended == CLIENT_ABORT),
        error_message=state.error,
    )
    response = (state.usage_event or {}).get("response")
    if call.endpoint.name == "responses" and isinstance(response, dict):
        if isinstance(response.get("id"), str):
            receipt.upstream_response_id = response["id"]
            rt.remember_response(response["id"], call.channel.id if call.channel else None)
    done = await rt.executor.call(
        billing.finish, rt.ledger, receipt=receipt, charge=charge, idem_key=call.idem_key
    )
    call.settled = True
    return done


async def _finish_stream(call: Call, send: Send, state: Pump, done: billing.Finished) -> None:
    out: list[bytes] = []
    fields_ = cost_fields(call, done.charged_nanos)
    if done.balance_after_nanos is not None:
        from tallygate.kit.money import to_decimal_string

        fields_["balance_after"] = orjson.Fragment(
            to_decimal_string(done.balance_after_nanos).encode()
        )
    if state.ended == BROKEN:
        out.append(
            b"data: "
            + orjson.dumps(
                {
                    "error": {
                        "message": state.error + "; you were charged only for what was received",
                        "type": "server_error",
                        "code": "upstream_stream_broken",
                        "param": None,
                    }
                }
            )
            + b"\n\n"
        )
    elif state.ended == CUT:
        out.append(b"data: " + orjson.dumps(_length_chunk(call)) + b"\n\n")
    if call.endpoint.name == "responses":
        if state.usage_event is not None:
            response = state.usage_event.get("response")
            if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                response["usage"].update(fields_)
            name = state.usage_event_name or b"event: response.completed"
            out.append(name + b"\ndata: " + orjson.dumps(state.usage_event) + b"\n\n")
    else:
        if call.include_usage:
            event = state.usage_event or _synthetic_usage_chunk(call, state)
            block = event.get("usage")
            if not isinstance(block, dict):
                block = event["usage"] = {}
            block.update(fields_)
            out.append(b"data: " + orjson.dumps(event) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b"".join(out), "more_body": False})


def _length_chunk(call: Call) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
    if call.endpoint.name == "chat":
        choice["delta"] = {}
        obj = "chat.completion.chunk"
    else:
        choice["text"] = ""
        obj = "text_completion"
    return {
        "id": call.request_id,
        "object": obj,
        "created": int(time.time()),
        "model": call.upstream_model,
        "choices": [choice],
    }


def _synthetic_usage_chunk(call: Call, state: Pump) -> dict[str, Any]:
    usage, _ = _usage_for(call, state)
    return {
        "id": call.request_id,
        "object": "chat.completion.chunk" if call.endpoint.name == "chat" else "text_completion",
        "created": int(time.time()),
        "model": call.upstream_model,
        "choices": [],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "estimated": True,
        },
    }
