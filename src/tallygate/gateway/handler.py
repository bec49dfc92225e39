"""The /v1 request path (DESIGN.md §4), as plain ASGI:

authenticate (cached key hash) → parse only what billing needs → resolve model and route type
→ rate limit → hold the worst case (group-commit executor) → call upstream with fallback →
settle the actual charge and write the receipt in one transaction → answer with the cost.

Every request with a known key leaves a receipt, refused and failed ones too."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from tallygate.billing import pricing
from tallygate.billing import service as billing
from tallygate.billing.receipts import Receipt
from tallygate.errors import TallygateError
from tallygate.gateway import http, models_api
from tallygate.gateway.endpoints import ENDPOINTS, Endpoint, Usage
from tallygate.gateway.http import Receive, Scope, Send
from tallygate.gateway.runtime import Runtime
from tallygate.gateway.snapshot import Channel, KeyInfo, ModelInfo, Offer
from tallygate.kit.money import to_decimal_string
from tallygate.ledger.errors import (
    AccountOwes,
    InsufficientBalance,
    KeyNotUsable,
    KeySpendLimit,
)

logger = logging.getLogger(__name__)

ROUTE_TYPES = ("official", "routed")
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524})


class Refusal(Exception):
    """A request refused before any upstream call: answered with an OpenAI error."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or []


@dataclass(slots=True)
class Call:
    """Everything one request accumulates for its receipt and response."""

    rt: Runtime
    endpoint: Endpoint
    request_id: str
    started: float
    key: KeyInfo | None = None
    raw: bytes = b""
    body: dict[str, Any] = field(default_factory=dict)
    model: ModelInfo | None = None
    offer: Offer | None = None
    api_model_id: str = ""
    route_type: str = ""
    prompt_estimate: int = 0
    max_output: int = 0
    cap_sent: int | None = None
    hold_nanos: int = 0
    streamed: bool = False
    include_usage: bool = False
    idem_key: str | None = None
    request_hash: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    primary: str = ""
    channel: Channel | None = None
    upstream_model: str = ""
    settled: bool = False
    """The hold was settled or released (and the receipt written)."""
    owner_channel: int | None = None
    """Responses API: the channel that created ``previous_response_id`` (only it knows it)."""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def receipt(self, status: str, http_status: int, **values: Any) -> Receipt:
        key, offer = self.key, self.offer
        assert key is not None
        price = offer.price if offer else None
        receipt = Receipt(
            request_id=self.request_id,
            created_at=self.rt.now_us(),
            user_id=key.user_id,
            endpoint=self.endpoint.name,
            http_status=http_status,
            status=status,
            key_id=key.id,
            key_label=key.label,
            project=key.project,
            model=self.model.name if self.model else "",
            api_model_id=self.api_model_id,
            upstream_model=self.upstream_model,
            route_type=self.route_type,
            bucket=offer.bucket if offer else "",
            currency=price.currency if price else "",
            primary_channel=self.primary,
            channel=self.channel.label if self.channel else "",
            backup_used=int(len(self.attempts) > 1 and self.channel is not None),
            attempts_json=orjson.dumps(self.attempts).decode(),
            price_version_id=price.version_id if price else None,
            input_per_m_nanos=price.input_per_m if price else 0,
            output_per_m_nanos=price.output_per_m if price else 0,
            cached_input_per_m_nanos=price.cached_input_per_m if price else 0,
            hold_nanos=self.hold_nanos,
            latency_us=int((time.perf_counter() - self.started) * 1e6),
            streamed=int(self.streamed),
            channel_id=self.channel.id if self.channel else None,
        )
        for name, value in values.items():
            setattr(receipt, name, value)
        return receipt


def request_id() -> str:
    """``req_``, 12 hex digits of the Unix time in milliseconds, 12 random hex digits: ids that
    sort by time, so each request's rows land at the right edge of the indexes keyed by it
    (receipts, holds, ledger entries) instead of on a random page (decision 0021)."""
    return f"req_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


async def handle(rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    path, method = scope["path"], scope["method"]
    endpoint = ENDPOINTS.get(path)
    if endpoint is None:
        if path == "/v1/models" or path.startswith("/v1/models/"):
            await models_api.handle(rt, scope, send, authenticate)
            return
        await http.send_error(send, 404, f"unknown endpoint {method} {path}", "unknown_url")
        return
    if method != "POST":
        await http.send_error(send, 405, f"{path} accepts POST only", "method_not_allowed")
        return
    call = Call(rt, endpoint, request_id(), time.perf_counter())
    executor = rt.executor
    executor.active += 1  # a lone request's ledger calls run inline (ledger.executor)
    try:
        await _serve(call, scope, receive, send)
    except Refusal as refusal:
        await _refuse(call, send, refusal)
    except http.ClientGone:
        return
    finally:
        executor.active -= 1


async def authenticate(rt: Runtime, scope: Scope) -> KeyInfo:
    auth = http.header(scope, b"authorization")
    if not auth or not auth[:7].lower() == "bearer ":
        raise Refusal(
            401,
            "missing API key: send 'Authorization: Bearer <your Tallygate key>'",
            "missing_api_key",
        )
    digest = hashlib.sha256(auth[7:].strip().encode()).hexdigest()
    key = rt.snapshot.keys.get(digest)
    if key is None:
        # A key created since the last load. Look again whoever reloaded: when concurrent
        # requests race here, one reloads and the others find the version already current
        # (refresh() answers False), yet the snapshot they read now holds the key.
        await rt.refresh()
        key = rt.snapshot.keys.get(digest)
    if key is None:
        raise Refusal(401, "invalid API key", "invalid_api_key")
    if key.expires_at is not None and key.expires_at <= rt.now_us():
        raise Refusal(401, "this API key has expired", "invalid_api_key")
    return key


async def _serve(call: Call, scope: Scope, receive: Receive, send: Send) -> None:
    rt = call.rt
    call.key = await authenticate(rt, scope)
    try:
        raw = await http.read_body(receive)
    except http.BodyTooLarge:
        raise Refusal(413, "request body too large", "request_too_large") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refusal(400, "request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise Refusal(400, "request body must be a JSON object", "invalid_json")
    call.raw, call.body = raw, body
    _resolve_model(call)
    problem = call.endpoint.validate(body)
    if problem:
        raise Refusal(400, problem[0], "invalid_request", problem[1])
    call.streamed = body.get("stream") is True
    options = body.get("stream_options")
    call.include_usage = isinstance(options, dict) and options.get("include_usage") is True
    call.idem_key = http.header(scope, b"idempotency-key")
    if call.idem_key:
        call.request_hash = hashlib.sha256(raw).hexdigest()
    call.prompt_estimate = call.endpoint.prompt_tokens(body)
    requested = _requested_output(call)
    if call.endpoint.name == "responses" and "previous_response_id" in body:
        await _previous_response_owner(call)
    await _rate_limit(call, requested)
    replay = await _hold(call, requested)
    if replay is not None:
        await _answer_replay(call, send, replay)
        return
    from tallygate.gateway import proxy

    try:
        await proxy.forward(call, scope, receive, send)
    except http.ClientGone:
        raise
    except Exception:
        await proxy.fail_inside(call, send)


def _resolve_model(call: Call) -> None:
    key, snapshot = call.key, call.rt.snapshot
    assert key is not None
    api_model_id = call.body.get("model")
    if not isinstance(api_model_id, str) or not api_model_id:
        raise Refusal(400, "'model' is required", "invalid_request", "model")
    call.api_model_id = api_model_id
    name, _, suffix = api_model_id.rpartition(":")
    if name and suffix in ROUTE_TYPES:
        route_type = suffix
    else:
        name, route_type = api_model_id, key.default_route_type
    model = snapshot.models.get(name)
    if model is None:
        raise Refusal(404, f"the model '{api_model_id}' does not exist", "model_not_found", "model")
    call.model, call.route_type = model, route_type
    if not key.allows_model(name):
        raise Refusal(
            403, f"this API key may not use the model '{name}'", "model_not_allowed", "model"
        )
    if route_type not in key.allowed_route_types:
        raise Refusal(
            403,
            f"this API key may not use {route_type} routes "
            f"(allowed: {', '.join(sorted(key.allowed_route_types))})",
            "route_type_not_allowed",
            "model",
        )
    offer = model.offers.get(route_type)
    if offer is None:
        offered = ", ".join(f"'{name}:{r}'" for r in sorted(model.offers)) or "none"
        raise Refusal(
            404,
            f"the model '{name}' is not offered on the {route_type} route (available: {offered})",
            "model_not_found",
            "model",
        )
    call.offer = offer


async def _previous_response_owner(call: Call) -> None:
    """Only the channel that created the previous response knows it, so the request must go
    there or nowhere: refused before any hold when no usable channel of this route owns it."""
    previous = call.body.get("previous_response_id")
    if previous is None:
        return
    if not isinstance(previous, str) or not previous:
        raise Refusal(
            400,
            "'previous_response_id' must be a non-empty string",
            "invalid_request",
            "previous_response_id",
        )
    assert call.model is not None
    owner = await call.rt.response_owner(previous)
    serving = call.rt.snapshot.channels_for(call.model.name, call.route_type)
    if owner is None or not any(c.id == owner for c in serving):
        raise Refusal(
            400,
            f"previous_response_id '{previous}' is unknown here or its channel no longer "
            f"serves '{call.api_model_id}'",
            "previous_response_not_found",
            "previous_response_id",
        )
    call.owner_channel = owner


def _requested_output(call: Call) -> int | None:
    for name in call.endpoint.max_fields:
        value = call.body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise Refusal(400, f"'{name}' must be a positive integer", "invalid_request", name)
        return value
    return None


async def _rate_limit(call: Call, requested: int | None) -> None:
    key, model = call.key, call.model
    assert key is not None and model is not None
    expected = call.prompt_estimate + (requested or 0)
    verdict = await call.rt.limiter.check(
        key.id, key.rpm_limit, key.tpm_limit, expected, call.request_id
    )
    call.headers.extend(verdict.headers)
    if not verdict.allowed:
        raise Refusal(
            429,
            verdict.message,
            "rate_limit_exceeded",
            headers=[(b"retry-after", str(verdict.retry_after).encode())],
        )


def _prompt_for_hold(call: Call) -> int:
    # Pad the estimate so a tokenizer difference rarely makes usage exceed the hold.
    return call.prompt_estimate + call.prompt_estimate // 8 + 16


async def _hold(call: Call, requested: int | None) -> billing.Replay | None:
    rt, key, model, offer = call.rt, call.key, call.model, call.offer
    assert key is not None and model is not None and offer is not None
    prompt = _prompt_for_hold(call)
    if not call.endpoint.has_output:
        out = 0
    elif requested is None:
        out = model.output_cap
    else:
        out = min(requested, model.output_cap)
        if out < requested:
            call.cap_sent = out
    for attempt in range(2):
        amount = max(pricing.worst_case(offer.price, prompt, out), 1)
        try:
            begun = await rt.executor.call(
                billing.begin,
                rt.ledger,
                request_id=call.request_id,
                user_id=key.user_id,
                bucket=offer.bucket,
                amount=amount,
                key_id=key.id,
                idem_key=call.idem_key,
                request_hash=call.request_hash,
                now_us=rt.now_us(),
            )
        except InsufficientBalance as exc:
            afford = pricing.affordable_output(offer.price, prompt, exc.available_nanos)
            if requested is None and attempt == 0 and call.endpoint.has_output and afford >= 1:
                out = min(afford, model.output_cap)
                call.cap_sent = out
                continue
            raise Refusal(
                402,
                f"{exc.message}; the balance affords {min(afford, out)} output tokens for this "
                f"prompt" + (f" (asked for {requested})" if requested else ""),
                "insufficient_balance",
            ) from None
        except AccountOwes as exc:
            raise Refusal(402, exc.message, "account_owes") from None
        except KeySpendLimit as exc:
            raise Refusal(402, exc.message, "key_spend_limit") from None
        except KeyNotUsable as exc:
            raise Refusal(401, exc.message, "invalid_api_key") from None
        except TallygateError as exc:
            raise Refusal(exc.status, exc.message, exc.code) from None
        if begun.replay is not None:
            return begun.replay
        call.hold_nanos = amount
        call.max_output = out
        return None
    raise AssertionError("unreachable")


async def _answer_replay(call: Call, send: Send, replay: billing.Replay) -> None:
    if not replay.same_body:
        raise Refusal(
            409,
            "this Idempotency-Key was already used with a different request body",
            "idempotency_conflict",
        )
    if replay.status != "done":
        raise Refusal(
            409,
            f"a request with this Idempotency-Key ({replay.request_id}) is still in progress",
            "idempotency_in_progress",
        )
    if replay.response_body is None:
        raise Refusal(
            409,
            f"this Idempotency-Key's request {replay.request_id} already "
            "completed (a stream cannot be replayed); it was billed once — see its "
            "receipt",
            "idempotency_replay_unavailable",
        )
    await http.send_bytes(
        send,
        int(replay.response_status or 200),
        replay.response_body.encode(),
        [(b"x-request-id", replay.request_id.encode()), (b"idempotent-replayed", b"true")],
    )


async def _refuse(call: Call, send: Send, refusal: Refusal) -> None:
    if call.key is not None:
        receipt = call.receipt(
            "rejected",
            refusal.status,
            failure_class="rejected",
            charge_policy=call.rt.snapshot.policy.label("rejected"),
            error_code=refusal.code,
            error_message=refusal.message,
        )
        try:
            await call.rt.executor.call(billing.reject, receipt=receipt)
        except Exception:  # noqa: BLE001 - the refusal still reaches the client
            logger.exception("could not record a rejected request")
    headers = [(b"x-request-id", call.request_id.encode())] + call.headers + refusal.headers
    await http.send_error(
        send, refusal.status, refusal.message, refusal.code, refusal.param, headers
    )


def cost_fields(call: Call, charged: int) -> dict[str, Any]:
    offer = call.offer
    assert offer is not None
    return {
        "cost": orjson.Fragment(to_decimal_string(charged).encode()),
        "cost_nanos": charged,
        "cost_currency": offer.price.currency,
        "bucket": offer.bucket,
    }


def cost_headers(call: Call, done: billing.Finished) -> list[tuple[bytes, bytes]]:
    offer = call.offer
    assert offer is not None
    headers = [
        (b"x-request-id", call.request_id.encode()),
        (b"x-tallygate-charge", to_decimal_string(done.charged_nanos).encode()),
        (b"x-tallygate-currency", offer.price.currency.encode()),
        (b"x-tallygate-bucket", offer.bucket.encode()),
    ]
    if done.balance_after_nanos is not None:
        headers.append(
            (b"x-tallygate-balance-after", to_decimal_string(done.balance_after_nanos).encode())
        )
    return headers + call.headers


def charge_for(call: Call, usage: Usage) -> int:
    assert call.offer is not None
    return pricing.charge(
        call.offer.price, usage.input_tokens, usage.output_tokens, usage.cached_tokens
    )


def upstream_timeout(channel: Channel) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, sock_connect=min(10, channel.timeout_seconds), sock_read=channel.timeout_seconds
    )
