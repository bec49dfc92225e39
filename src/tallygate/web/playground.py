"""Playground: pick a model and route, send a chat with one of your keys, and read the answer
with its receipt (tokens, applied price, charge, bucket, balance after, ledger entry) under it.

The request goes through the gateway in-process (the same ASGI app, no network hop), exactly as
an API client's would, so it is billed and receipted like any other. The key is used for this
one request and never stored, and never written into a page.

Two ways in (docs/decisions/0013-console-charts-and-streaming.md):

- the plain form post (``POST /playground``) waits for the whole answer and renders the page;
- with JavaScript, the page posts the same form to ``POST /playground/stream`` and reads the
  answer as it streams: the gateway's SSE is relayed as newline-delimited JSON events
  (``{"delta": …}`` while tokens arrive, ``{"error": …}``, then ``{"receipt_html": …}`` and
  ``{"done": true}``). A browser that leaves mid-answer is a client disconnect to the gateway,
  which bills it by the charge policy like any other."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
import orjson
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response, StreamingResponse

from tallygate.catalog import marketplace
from tallygate.errors import TallygateError
from tallygate.receipts import service as receipts
from tallygate.receipts.schemas import ReceiptOut
from tallygate.web.auth import SignedIn, SignedInForm, Viewer
from tallygate.web.render import SECURITY_HEADERS, page, templates

router = APIRouter(include_in_schema=False)
RECEIPT_WAIT_SECONDS = 3.0
CHAT_PATH = "/v1/chat/completions"


def _models(v: Viewer) -> list[str]:
    assert v.user is not None
    with v.state.db.read() as conn:
        market = marketplace.marketplace(
            conn, user_id=v.user.id, now_us=v.state.now_us(), currencies=v.state.ledger.currencies
        )
    return [o.api_model_id for m in market.models for o in m.offers if o.enabled and o.prices]


def _page(request: Request, v: Viewer, status: int = 200, **context: Any) -> Response:
    context.setdefault("model", "")
    context.setdefault("message", "")
    return page(
        request,
        v,
        "playground.html",
        status_code=status,
        title="Playground",
        nav="playground",
        models=_models(v),
        **context,
    )


@router.get("/playground")
def playground(request: Request, v: SignedIn) -> Response:
    return _page(request, v)


async def _receipt(v: Viewer, request_id: str) -> ReceiptOut | None:
    assert v.user is not None
    user_id = v.user.id
    waited = 0.0
    while True:
        try:
            with v.state.db.read() as conn:
                return receipts.get(conn, v.state.ledger, request_id, user_id)
        except TallygateError:
            if waited >= RECEIPT_WAIT_SECONDS:
                return None
        await anyio.sleep(0.1)
        waited += 0.1


def _error_message(raw: bytes, status: int) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or f"HTTP {status}")


@router.post("/playground")
async def send(
    request: Request,
    v: SignedInForm,
    model: Annotated[str, Form(max_length=200)] = "",
    message: Annotated[str, Form(max_length=20_000)] = "",
    api_key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    body = {"model": model, "messages": [{"role": "user", "content": message}]}
    transport = httpx.ASGITransport(app=request.app, client=("127.0.0.1", 0))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://playground.internal", timeout=120
    ) as client:
        answer = await client.post(
            CHAT_PATH, json=body, headers={"Authorization": f"Bearer {api_key}"}
        )
    request_id = answer.headers.get("x-request-id")
    receipt = await _receipt(v, request_id) if request_id else None
    try:
        data = answer.json()
    except ValueError:
        data = {}
    reply, error = "", ""
    if answer.status_code == 200:
        choices = data.get("choices") or [{}]
        reply = str((choices[0].get("message") or {}).get("content") or "")
    else:
        error = _error_message(answer.content, answer.status_code)
    return _page(
        request,
        v,
        status=200 if answer.status_code == 200 else 400,
        model=model,
        message=message,
        reply=reply,
        error=error,
        receipt=receipt,
        request_id=request_id,
    )


def _scope(request: Request, body: bytes, api_key: str) -> dict[str, Any]:
    """An ASGI scope for the gateway's chat endpoint, as a loopback API client would send it."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT_PATH,
        "raw_path": CHAT_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"playground.internal"),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {api_key}".encode()),
        ],
        "client": ("127.0.0.1", 0),
        "server": ("playground.internal", 80),
    }
    if "state" in request.scope:
        scope["state"] = dict(request.scope["state"])
    return scope


async def _gateway_messages(request: Request, body: bytes, api_key: str) -> AsyncIterator[Any]:
    """The gateway's ASGI messages for one streamed chat, as it sends them.

    The gateway runs shielded: when the browser goes away, this generator is closed, the
    gateway sees ``http.disconnect`` (not a cancellation) and settles the request itself."""
    outbox, inbox = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
    gone = anyio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await outbox.send(message)

    async def run() -> None:
        with anyio.CancelScope(shield=True):
            try:
                await request.app(_scope(request, body, api_key), receive, send)
            finally:
                outbox.close()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        try:
            async with inbox:
                async for message in inbox:
                    yield message
        finally:
            gone.set()


def _event(**fields: Any) -> bytes:
    return orjson.dumps(fields) + b"\n"


def _deltas(data: bytes) -> tuple[list[str], str]:
    """Text deltas and any error message in one SSE ``data:`` payload of a chat stream."""
    if data.strip() == b"[DONE]":
        return [], ""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [], ""
    if not isinstance(chunk, dict):
        return [], ""
    if isinstance(chunk.get("error"), dict):
        return [], str(chunk["error"].get("message") or "the stream broke off")
    texts = []
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if content:
            texts.append(str(content))
    return texts, ""


async def _relay(request: Request, v: Viewer, body: bytes, api_key: str) -> AsyncIterator[bytes]:
    status, request_id, pending, raw = 0, None, b"", b""
    async for message in _gateway_messages(request, body, api_key):
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers = {k.decode().lower(): val.decode() for k, val in message.get("headers", [])}
            request_id = headers.get("x-request-id")
            yield _event(started=True, status=status, request_id=request_id)
            continue
        if message["type"] != "http.response.body":
            continue
        chunk = bytes(message.get("body", b""))
        if status != 200:
            raw += chunk
            continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            texts, error = _deltas(line[5:].strip())
            for text in texts:
                yield _event(delta=text)
            if error:
                yield _event(error=error)
    if status != 200:
        yield _event(error=_error_message(raw, status))
    receipt = await _receipt(v, request_id) if request_id else None
    html = templates.get_template("_playground_receipt.html").render(
        receipt=receipt, request_id=request_id, LABELS=templates.env.globals["LABELS"]
    )
    yield _event(receipt_html=html, request_id=request_id)
    yield _event(done=True)


@router.post("/playground/stream")
async def stream(
    request: Request,
    v: SignedInForm,
    model: Annotated[str, Form(max_length=200)] = "",
    message: Annotated[str, Form(max_length=20_000)] = "",
    api_key: Annotated[str, Form(max_length=200)] = "",
) -> StreamingResponse:
    """The same chat as the form post, streamed: newline-delimited JSON events (see above)."""
    body = orjson.dumps(
        {"model": model, "messages": [{"role": "user", "content": message}], "stream": True}
    )
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _relay(request, v, body, api_key), media_type="application/x-ndjson", headers=headers
    )
