"""Pure-ASGI entry for /v1: requests under /v1/ go straight to the gateway handler, past
FastAPI's routing and dependency machinery; everything else continues to the app."""

from __future__ import annotations

from typing import Any

from tallygate.gateway import handler
from tallygate.gateway.http import Receive, Scope, Send


class GatewayMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            runtime = scope["app"].state.gateway
            await handler.handle(runtime, scope, receive, send)
            return
        await self.app(scope, receive, send)
