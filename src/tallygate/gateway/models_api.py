"""GET /v1/models and /v1/models/{id}: only what the calling key may use. Each offered route
type is listed as its explicit API model id (``name:official`` / ``name:routed``), and the bare
name stands for the key's default route type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from tallygate.gateway import http
from tallygate.gateway.http import Scope, Send
from tallygate.gateway.snapshot import KeyInfo, ModelInfo

if TYPE_CHECKING:
    from tallygate.gateway.runtime import Runtime

Authenticate = Callable[["Runtime", Scope], Awaitable[KeyInfo]]


def _entries(model: ModelInfo, key: KeyInfo) -> list[dict[str, Any]]:
    if not key.allows_model(model.name):
        return []
    routes = [r for r in sorted(model.offers) if r in key.allowed_route_types]
    out = []
    if key.default_route_type in routes:
        out.append(_entry(model.name, model, key.default_route_type))
    out += [_entry(f"{model.name}:{route}", model, route) for route in routes]
    return out


def _entry(model_id: str, model: ModelInfo, route: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": model.created_at // 1_000_000,
        "owned_by": "tallygate",
        "route_type": route,
        "context_length": model.context_length,
        "max_output_tokens": model.output_cap,
    }


async def handle(rt: Runtime, scope: Scope, send: Send, authenticate: Authenticate) -> None:
    from tallygate.gateway.handler import Refusal

    try:
        if scope["method"] != "GET":
            raise Refusal(405, "model listing accepts GET only", "method_not_allowed")
        key = await authenticate(rt, scope)
        models = rt.snapshot.models
        if scope["path"] in ("/v1/models", "/v1/models/"):
            data = [e for m in sorted(models) for e in _entries(models[m], key)]
            await http.send_bytes(send, 200, orjson.dumps({"object": "list", "data": data}))
            return
        wanted = scope["path"][len("/v1/models/") :]
        for name in models:
            for entry in _entries(models[name], key):
                if entry["id"] == wanted:
                    await http.send_bytes(send, 200, orjson.dumps(entry))
                    return
        raise Refusal(
            404,
            f"the model '{wanted}' does not exist or this key may not use it",
            "model_not_found",
            "model",
        )
    except Refusal as refusal:
        await http.send_error(send, refusal.status, refusal.message, refusal.code, refusal.param)
