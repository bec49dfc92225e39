"""Playground: pick a model and route, send a chat with one of your keys, and read the answer
with its receipt (tokens, applied price, charge, bucket, balance after, ledger entry) under it.

The request goes through the gateway in-process (the same ASGI app, no network hop), exactly as
an API client's would, so it is billed and receipted like any other. The key is used for this
one request and never stored. Answers are not streamed yet (the plain form waits for them)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from tallygate.catalog import marketplace
from tallygate.errors import TallygateError
from tallygate.receipts import service as receipts
from tallygate.receipts.schemas import ReceiptOut
from tallygate.web.auth import SignedIn, SignedInForm, Viewer
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)
RECEIPT_WAIT_SECONDS = 3.0


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
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
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
        error = str((data.get("error") or {}).get("message") or f"HTTP {answer.status_code}")
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
