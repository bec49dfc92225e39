"""Small HTTP helpers shared by the catalog tests."""

from __future__ import annotations

from typing import Any

import httpx

from tallygate.audit import service as audit
from tallygate.audit.service import AuditEvent
from tallygate.users.service import User
from tests.fixtures.server import LiveServer


def as_user(live: LiveServer, user: User) -> httpx.Client:
    return live.client(headers={"Authorization": f"Bearer {live.make.session_token(user)}"})


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def add_model(http: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "context_length": 128_000, "output_cap": 16_384, **fields}
    return ok(http.post("/admin/api/models", json=body), 201)  # type: ignore[no-any-return]


def set_prices(
    http: httpx.Client, name: str, route_type: str, input: str, output: str, **more: Any
) -> dict[str, Any]:
    body = {"input": input, "output": output, **more}
    return ok(http.put(f"/admin/api/models/{name}/offers/{route_type}", json=body))  # type: ignore[no-any-return]


def audit_events(live: LiveServer) -> list[AuditEvent]:
    """Every audit event, oldest first, after checking that the chain verifies."""
    with live.db.read() as conn:
        tx = live.ledger.tx(conn)
        assert audit.verify(tx) == []
        return list(reversed(audit.list_events(tx, limit=1000)))
