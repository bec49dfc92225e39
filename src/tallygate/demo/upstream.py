"""A local OpenAI-compatible upstream that answers from the prompt and reports true token usage.

``create_upstream_app(config)`` returns a raw ASGI app (no framework, orjson) serving:

* ``POST /v1/chat/completions`` — non-streaming, or ``stream: true`` as server-sent events in
  OpenAI's chunk schema (``chat.completion.chunk``): a first chunk with the role, one chunk per
  token of content, a chunk with ``finish_reason``, a usage chunk (``choices: []``) only when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``;
* ``POST /v1/completions`` — the legacy ``text_completion`` shape, streaming or not;
* ``POST /v1/embeddings`` — deterministic unit vectors (``dimensions`` honoured, ``float`` or
  ``base64`` encoding), ``usage.prompt_tokens``;
* ``POST /v1/responses`` — the Responses API shape (``resp_…`` id, one output message,
  ``usage.input_tokens/output_tokens/total_tokens``), streaming or not. ``previous_response_id`` is
  echoed back in the response; an id this upstream did not create is a 400
  ``previous_response_not_found`` (as the real API answers), unless ``remember_responses`` is off;
* ``GET /v1/models`` and ``GET /v1/models/{id}``.

The reply is ``You said: "<the last user message, first 16 tokens>"`` followed by filler words and
a period, ``reply_tokens`` tokens long (longer when the quote alone is longer; ``reply_tokens=0``
is an empty answer, zero output tokens, as a model that stops at once gives). With ``max_tokens``
(or ``max_completion_tokens``, ``max_output_tokens``) smaller than that, the reply is cut to exactly
that many tokens and ``finish_reason`` is ``"length"``; otherwise it is ``"stop"``. ``usage``
always reports the true counts of :mod:`tallygate.demo.tokens`, with
``prompt_tokens_details.cached_tokens`` 0 (or ``cached_prompt_tokens`` of the prompt when so
configured, as a provider with prompt caching reports them). Tools, ``response_format`` and image parts are accepted;
tools and ``response_format`` are ignored; an image part counts what OpenAI (and the gateway's
own estimate) counts for it, any other non-text part 85 prompt tokens. ``n`` is ignored (one
choice).

When configured with ``api_key``, every request needs ``Authorization: Bearer <api_key>`` (401 in
OpenAI's error shape otherwise). Paths are matched after the ASGI ``root_path``, with or without
the ``/v1`` prefix, so the app can be mounted inside another ASGI app.

The request handling is split so that tests can reuse it: :meth:`DemoUpstream.handle` turns a
request into a :class:`JsonReply` or a :class:`StreamReply` (no I/O), and the ASGI layer sends it.

Run standalone: ``python -m tallygate.demo.upstream --port 9001 [--api-key K]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from tallygate.demo import tokens
from tallygate.research.demo_reply import reply as research_reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MODELS = ("demo-chat", "demo-embedding")
FILLER = (
    "Here is some more text from the demo so you can see it flow in bit by bit and then it ends"
).split()
"""Filler words, each at most four letters: with its leading space, exactly one token."""

MAX_EMBEDDING_DIMENSIONS = 4096
_STORED_RESPONSES = 10_000

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
DONE_FRAME = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    api_key: str | None = None
    """When set, requests must carry ``Authorization: Bearer <api_key>``."""
    models: tuple[str, ...] | None = None
    """Models listed and accepted; ``None`` accepts any model and lists :data:`DEFAULT_MODELS`."""
    reply_tokens: int = 40
    """Length of the natural reply (before any ``max_tokens`` cut); 0: an empty answer."""
    echo_tokens: int = 16
    """How many tokens of the last user message the reply quotes."""
    embedding_dimensions: int = 16
    latency: float = 0.0
    """Seconds to wait before every response."""
    chunk_delay: float = 0.0
    """Seconds to wait between streamed tokens."""
    remember_responses: bool = True
    """An unknown ``previous_response_id`` is a 400 (as the real API answers)."""
    cached_prompt_tokens: int = 0
    """Of each chat, completion and Responses prompt, this many tokens (at most the whole prompt)
    are reported as read from a prompt cache (``prompt_tokens_details.cached_tokens``,
    ``input_tokens_details.cached_tokens``), as a provider with prompt caching would."""
    owned_by: str = "tallygate-demo"


@dataclass(frozen=True, slots=True)
class Usage:
    """True usage of one response: what :mod:`tallygate.demo.tokens` counts."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Of the prompt tokens, those read from a prompt cache."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class JsonReply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    usage: Usage | None = None
    response_id: str | None = None
    text: str = ""
    """The completion text (empty for errors, embeddings and model lists)."""

    def header_list(self) -> list[tuple[bytes, bytes]]:
        return [*self.headers, (b"content-length", str(len(self.body)).encode())]


@dataclass(slots=True)
class StreamReply:
    """An SSE response, frame by frame: ``head``, one frame per token, ``tail``, ``usage_frames``
    (the usage chunk, when asked for) and ``done`` (``[DONE]``), sent in that order."""

    head: list[bytes]
    tokens: list[bytes]
    token_texts: list[str]
    tail: list[bytes]
    usage_frames: list[bytes]
    done: list[bytes]
    usage: Usage
    response_id: str
    status: int = 200

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return SSE_HEADERS

    @property
    def text(self) -> str:
        return "".join(self.token_texts)

    def frames(self, *, include_usage: bool = True) -> list[bytes]:
        usage = self.usage_frames if include_usage else []
        return [*self.head, *self.tokens, *self.tail, *usage, *self.done]


Reply = JsonReply | StreamReply


# ---- replies -------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def natural_reply(user_text: str, reply_tokens: int, echo_tokens: int) -> tuple[str, ...]:
    """The tokens of the full reply to ``user_text``, before any ``max_tokens`` cut."""
    if reply_tokens <= 0:
        return ()
    quoted = tokens.split(" ".join(user_text.split()))
    echo = "".join(quoted[:echo_tokens])
    if len(quoted) > echo_tokens:
        echo += "…"
    head = f'You said: "{echo}"'
    filler = max(0, reply_tokens - tokens.count(head) - 1)
    text = head + "".join(" " + FILLER[i % len(FILLER)] for i in range(filler)) + "."
    return tuple(tokens.split(text))


def error_reply(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> JsonReply:
    body = orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})
    return JsonReply(status, body, [*JSON_HEADERS, *headers])


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _usage_chat(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _usage_responses(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _cap(payload: Mapping[str, Any], *names: str) -> int | JsonReply | None:
    """The first of ``names`` present in ``payload`` as a token limit, or a 400 reply."""
    for name in names:
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return error_reply(
                400,
                f"Invalid '{name}': expected an integer greater than or equal to 1.",
                param=name,
                code="invalid_value",
            )
        return value
    return None


def _route(path: str) -> str:
    if path.startswith("/v1/") or path == "/v1":
        path = path[3:]
    return path.rstrip("/") or "/"


class DemoUpstream:
    """The demo upstream as an ASGI app; :meth:`handle` is the I/O-free core."""

    def __init__(self, config: UpstreamConfig | None = None) -> None:
        self.config = config or UpstreamConfig()
        self._responses: OrderedDict[str, int] = OrderedDict()
        self._bearer = b"Bearer " + self.config.api_key.encode() if self.config.api_key else None

    def _usage(self, prompt: int, completion: int) -> Usage:
        return Usage(prompt, completion, min(max(self.config.cached_prompt_tokens, 0), prompt))

    def reconfigure(self, config: UpstreamConfig) -> None:
        self.config = config
        self._bearer = b"Bearer " + config.api_key.encode() if config.api_key else None

    # ---- the core ----------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        authorization: bytes | None,
        body: bytes,
        *,
        omit_usage: bool = False,
        ignore_max_tokens: bool = False,
    ) -> Reply:
        """Answer one request. ``omit_usage`` leaves ``usage`` out (JSON) or the usage chunk out
        (streams); ``ignore_max_tokens`` answers the natural reply whatever the limit says."""
        route = _route(path)
        if self._bearer is not None and authorization != self._bearer:
            return error_reply(
                401,
                "Incorrect API key provided. You can find your API key in your demo settings.",
                code="invalid_api_key",
            )
        if route == "/models" or route.startswith("/models/"):
            if method != "GET":
                return error_reply(405, f"Method {method} not allowed on {path}.")
            return self._models(route[len("/models/") :] if route != "/models" else None)
        handler = self._handlers.get(route)
        if handler is None:
            return error_reply(404, f"Unknown request URL: {method} {path}.", code="unknown_url")
        if method != "POST":
            return error_reply(405, f"Method {method} not allowed on {path}.")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return error_reply(400, "We could not parse the JSON body of your request.")
        if not isinstance(payload, dict):
            return error_reply(400, "The request body must be a JSON object.")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return error_reply(400, "You must provide a model parameter.", param="model")
        if self.config.models is not None and model not in self.config.models:
            return error_reply(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return handler(self, payload, model, omit_usage, ignore_max_tokens)

    def _tokens(
        self, user_text: str, cap: int | None, ignore_max_tokens: bool
    ) -> tuple[tuple[str, ...], str]:
        cfg = self.config
        pieces = natural_reply(user_text, cfg.reply_tokens, cfg.echo_tokens)
        if cap is not None and len(pieces) > cap and not ignore_max_tokens:
            return pieces[:cap], "length"
        return pieces, "stop"

    def _models(self, model_id: str | None) -> JsonReply:
        names = self.config.models if self.config.models is not None else DEFAULT_MODELS
        objects = [
            {"id": name, "object": "model", "created": 0, "owned_by": self.config.owned_by}
            for name in names
        ]
        if model_id is None:
            return JsonReply(200, orjson.dumps({"object": "list", "data": objects}), JSON_HEADERS)
        for obj in objects:
            if obj["id"] == model_id:
                return JsonReply(200, orjson.dumps(obj), JSON_HEADERS)
        return error_reply(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    def _chat(
        self, payload: dict[str, Any], model: str, omit_usage: bool, ignore_max_tokens: bool
    ) -> Reply:
        messages = payload.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            return error_reply(
                400, "'messages' must be a non-empty array of objects.", param="messages"
            )
        cap = _cap(payload, "max_completion_tokens", "max_tokens")
        if isinstance(cap, JsonReply):
            return cap
        research = research_reply(messages)
        if research is None:
            pieces, finish = self._tokens(tokens.last_user_text(messages), cap, ignore_max_tokens)
        else:  # a research assistant step: cite the facts it was given (docs/research.md)
            pieces, finish = tuple(tokens.split(research)), "stop"
            if cap is not None and len(pieces) > cap and not ignore_max_tokens:
                pieces, finish = pieces[:cap], "length"
        usage = self._usage(tokens.chat_prompt_tokens(messages, tokens.image_tokens), len(pieces))
        rid = _new_id("chatcmpl-")
        created = int(time.time())
        if payload.get("stream") is not True:
            text = "".join(pieces)
            obj: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_demo",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "service_tier": "default",
            }
            if not omit_usage:
                obj["usage"] = _usage_chat(usage)
            return JsonReply(200, orjson.dumps(obj), JSON_HEADERS, usage, rid, text)
        include_usage = _include_usage(payload)
        prefix = (
            b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
            b'"system_fingerprint":"fp_demo","choices":['
        ) % (rid.encode(), created, orjson.dumps(model))
        end = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        head = [
            prefix + b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
            b'"logprobs":null,"finish_reason":null}]' + end
        ]
        middle = b'{"index":0,"delta":{"content":'
        after = b'},"logprobs":null,"finish_reason":null}]' + end
        frames = [prefix + middle + orjson.dumps(p) + after for p in pieces]
        tail = [
            prefix
            + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%s"}]' % finish.encode()
            + end
        ]
        usage_frames = []
        if include_usage and not omit_usage:
            usage_frames.append(
                prefix + b'],"usage":' + orjson.dumps(_usage_chat(usage)) + b"}\n\n"
            )
        return StreamReply(head, frames, list(pieces), tail, usage_frames, [DONE_FRAME], usage, rid)

    def _completions(
        self, payload: dict[str, Any], model: str, omit_usage: bool, ignore_max_tokens: bool
    ) -> Reply:
        prompt = payload.get("prompt")
        if isinstance(prompt, str):
            user_text = prompt
        elif isinstance(prompt, list) and prompt:
            first = prompt[0]
            user_text = first if isinstance(first, str) else ""
        else:
            return error_reply(400, "'prompt' must be a string or an array.", param="prompt")
        cap = _cap(payload, "max_tokens")
        if isinstance(cap, JsonReply):
            return cap
        pieces, finish = self._tokens(user_text, cap, ignore_max_tokens)
        usage = self._usage(tokens.prompt_tokens(prompt), len(pieces))
        rid = _new_id("cmpl-")
        created = int(time.time())
        if payload.get("stream") is not True:
            text = "".join(pieces)
            obj: dict[str, Any] = {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_demo",
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            }
            if not omit_usage:
                obj["usage"] = _usage_chat(usage)
            return JsonReply(200, orjson.dumps(obj), JSON_HEADERS, usage, rid, text)
        include_usage = _include_usage(payload)
        prefix = (
            b'data: {"id":"%s","object":"text_completion","created":%d,"model":%s,'
            b'"system_fingerprint":"fp_demo","choices":['
        ) % (rid.encode(), created, orjson.dumps(model))
        end = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        after = b',"index":0,"logprobs":null,"finish_reason":null}]' + end
        frames = [prefix + b'{"text":' + orjson.dumps(p) + after for p in pieces]
        tail = [
            prefix
            + b'{"text":"","index":0,"logprobs":null,"finish_reason":"%s"}]' % finish.encode()
            + end
        ]
        usage_frames = []
        if include_usage and not omit_usage:
            usage_frames.append(
                prefix + b'],"usage":' + orjson.dumps(_usage_chat(usage)) + b"}\n\n"
            )
        return StreamReply([], frames, list(pieces), tail, usage_frames, [DONE_FRAME], usage, rid)

    def _embeddings(
        self, payload: dict[str, Any], model: str, omit_usage: bool, ignore_max_tokens: bool
    ) -> Reply:
        raw = payload.get("input")
        keys: list[bytes]
        if isinstance(raw, str):
            keys = [raw.encode()]
        elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            keys = [x.encode() for x in raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            keys = [orjson.dumps(raw)]
        elif isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
            keys = [orjson.dumps(x) for x in raw]
        else:
            return error_reply(400, "'input' must be a string or an array.", param="input")
        dims = payload.get("dimensions")
        if dims is None:
            dims = self.config.embedding_dimensions
        if (
            isinstance(dims, bool)
            or not isinstance(dims, int)
            or not 1 <= dims <= MAX_EMBEDDING_DIMENSIONS
        ):
            return error_reply(400, "Invalid 'dimensions'.", param="dimensions")
        fmt = payload.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return error_reply(400, "Invalid 'encoding_format'.", param="encoding_format")
        data = []
        for i, key in enumerate(keys):
            vec = embedding_vector(key, dims)
            value: Any = (
                base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
                if fmt == "base64"
                else vec
            )
            data.append({"object": "embedding", "index": i, "embedding": value})
        usage = Usage(tokens.prompt_tokens(raw), 0)
        obj: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if not omit_usage:
            obj["usage"] = {
                "prompt_tokens": usage.prompt_tokens,
                "total_tokens": usage.total_tokens,
            }
        return JsonReply(200, orjson.dumps(obj), JSON_HEADERS, usage)

    def _responses_api(
        self, payload: dict[str, Any], model: str, omit_usage: bool, ignore_max_tokens: bool
    ) -> Reply:
        previous = payload.get("previous_response_id")
        context = 0
        if previous is not None:
            if not isinstance(previous, str):
                return error_reply(
                    400, "Invalid 'previous_response_id'.", param="previous_response_id"
                )
            stored = self._responses.get(previous)
            if stored is None and self.config.remember_responses:
                return error_reply(
                    400,
                    f"Previous response with id '{previous}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            context = stored or 0
        raw = payload.get("input")
        if not isinstance(raw, str | list):
            return error_reply(400, "'input' must be a string or an array.", param="input")
        instructions = payload.get("instructions")
        cap = _cap(payload, "max_output_tokens")
        if isinstance(cap, JsonReply):
            return cap
        messages = tokens.responses_messages(None, raw)
        user_text = raw if isinstance(raw, str) else tokens.last_user_text(messages)
        pieces, finish = self._tokens(user_text, cap, ignore_max_tokens)
        prompt = tokens.responses_input_tokens(instructions, raw, tokens.image_tokens)
        usage = self._usage(context + prompt, len(pieces))
        rid = _new_id("resp_")
        mid = _new_id("msg_")
        if payload.get("store") is not False:
            self._responses[rid] = usage.total_tokens
            if len(self._responses) > _STORED_RESPONSES:
                self._responses.popitem(last=False)
        text = "".join(pieces)
        status = "completed" if finish == "stop" else "incomplete"

        def response(state: str, output: list[Any], with_usage: bool) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": int(time.time()),
                "status": state,
                "error": None,
                "incomplete_details": (
                    {"reason": "max_output_tokens"} if state == "incomplete" else None
                ),
                "instructions": instructions,
                "max_output_tokens": cap,
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": previous,
                "store": payload.get("store") is not False,
                "temperature": 1.0,
                "text": {"format": {"type": "text"}},
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": _usage_responses(usage) if with_usage else None,
                "metadata": payload.get("metadata") or {},
            }

        part = {"type": "output_text", "text": text, "annotations": []}
        item = {
            "type": "message",
            "id": mid,
            "status": status,
            "role": "assistant",
            "content": [part],
        }
        if payload.get("stream") is not True:
            obj = response(status, [item], not omit_usage)
            if omit_usage:
                del obj["usage"]
            return JsonReply(200, orjson.dumps(obj), JSON_HEADERS, usage, rid, text)

        seq = 0

        def event(kind: str, data: dict[str, Any]) -> bytes:
            nonlocal seq
            frame = b"event: %s\ndata: %s\n\n" % (
                kind.encode(),
                orjson.dumps({"type": kind, "sequence_number": seq, **data}),
            )
            seq += 1
            return frame

        where = {"item_id": mid, "output_index": 0, "content_index": 0}
        head = [
            event("response.created", {"response": response("in_progress", [], False)}),
            event("response.in_progress", {"response": response("in_progress", [], False)}),
            event(
                "response.output_item.added",
                {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
            ),
            event(
                "response.content_part.added",
                {**where, "part": {"type": "output_text", "text": "", "annotations": []}},
            ),
        ]
        delta_prefix = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            b'"item_id":"%s","output_index":0,"content_index":0,"logprobs":[],"sequence_number":'
            % mid.encode()
        )
        frames = [
            delta_prefix + b'%d,"delta":%s}\n\n' % (seq + i, orjson.dumps(p))
            for i, p in enumerate(pieces)
        ]
        seq += len(pieces)
        final = "response.completed" if status == "completed" else "response.incomplete"
        tail = [
            event("response.output_text.done", {**where, "text": text, "logprobs": []}),
            event("response.content_part.done", {**where, "part": part}),
            event("response.output_item.done", {"output_index": 0, "item": item}),
            event(final, {"response": response(status, [item], not omit_usage)}),
        ]
        return StreamReply(head, frames, list(pieces), tail, [], [], usage, rid)

    _handlers: dict[str, Callable[[DemoUpstream, dict[str, Any], str, bool, bool], Reply]] = {
        "/chat/completions": _chat,
        "/completions": _completions,
        "/embeddings": _embeddings,
        "/responses": _responses_api,
    }

    # ---- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        reply = self.handle(
            scope["method"], request_path(scope), header(scope, b"authorization"), body
        )
        cfg = self.config
        if cfg.latency > 0:
            await asyncio.sleep(cfg.latency)
        if isinstance(reply, JsonReply):
            await send_json(send, reply)
            return
        await send({"type": "http.response.start", "status": 200, "headers": reply.headers})
        if cfg.chunk_delay <= 0:
            for frame in reply.frames():
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        else:
            watch = DisconnectWatch(receive)
            try:
                for frame in reply.head:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                for frame in reply.tokens:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    if await watch.sleep(cfg.chunk_delay):
                        return
                for frame in (*reply.tail, *reply.usage_frames, *reply.done):
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
            finally:
                watch.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _include_usage(payload: Mapping[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def embedding_vector(key: bytes, dims: int) -> list[float]:
    """A deterministic unit vector for ``key`` (SHAKE-256 stream mapped to [-1, 1])."""
    raw = struct.unpack(f"<{dims}I", hashlib.shake_256(key).digest(4 * dims))
    vec = [x / 2147483647.5 - 1.0 for x in raw]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


def create_upstream_app(config: UpstreamConfig | None = None) -> DemoUpstream:
    """The demo upstream as an ASGI app (lifespan supported, so uvicorn can serve it directly)."""
    return DemoUpstream(config)


# ---- ASGI helpers, shared with the test upstream -------------------------------------------------


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return bytes(body)
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
    return b"".join(parts)


def request_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def send_json(send: Send, reply: JsonReply) -> None:
    await send(
        {"type": "http.response.start", "status": reply.status, "headers": reply.header_list()}
    )
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


async def run_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class DisconnectWatch:
    """Notices, while a response is under way, that the client closed the connection.

    It waits on ``receive()`` for ``http.disconnect`` in a task of its own (the request body must
    have been read already). ``at`` is the ``time.monotonic()`` of the notice. Close the watch
    before sending the last body message: a server reports ``http.disconnect`` after a complete
    response too."""

    def __init__(self, receive: Receive, on_disconnect: Callable[[float], None] | None = None):
        self.at: float | None = None
        self.event = asyncio.Event()
        self._on_disconnect = on_disconnect
        self._task = asyncio.ensure_future(self._run(receive))

    async def _run(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.at = time.monotonic()
                self.event.set()
                if self._on_disconnect is not None:
                    self._on_disconnect(self.at)
                return

    @property
    def disconnected(self) -> bool:
        return self.event.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the client leaves first; True when it has left."""
        if seconds <= 0 or self.event.is_set():
            await asyncio.sleep(0)
            return self.event.is_set()
        try:
            await asyncio.wait_for(self.event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._task.cancel()


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a manual tool
    import uvicorn

    parser = argparse.ArgumentParser(description="Run the Tallygate demo upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--reply-tokens", type=int, default=UpstreamConfig().reply_tokens)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each response")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between tokens")
    args = parser.parse_args(argv)
    config = UpstreamConfig(
        api_key=args.api_key,
        reply_tokens=args.reply_tokens,
        latency=args.latency,
        chunk_delay=args.chunk_delay,
    )
    uvicorn.run(
        create_upstream_app(config),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
