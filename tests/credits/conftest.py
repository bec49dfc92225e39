"""Helpers for credits tests: a live server (optionally without uvicorn's own proxy-header
handling, so Tallygate's ``trusted_proxies`` alone decides), operator and user clients,
campaigns, codes, requests that spend through the real billing path, and a counter of every
row a refused claim must not write."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from tallygate.billing import service as billing
from tallygate.billing.receipts import Receipt
from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock, to_epoch_us
from tallygate.ledger import Ledger
from tallygate.models.audit import audit_events
from tallygate.models.credits import campaigns, redeem_codes, redemptions
from tallygate.models.ledger import entries, lots, postings
from tallygate.users.service import User
from tests.fixtures.factories import Factory
from tests.fixtures.server import AppFactory, LiveServer, live, make_app

__all__ = ["live", "make_app", "serve"]

UNIT = 1_000_000_000


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    """Like ``tests.fixtures.server.serving`` but with uvicorn's proxy headers off: the peer
    address reaches the app as it is."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        access_log=False,
        loop="asyncio",
        http="h11",
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the test server failed to start"
        assert time.monotonic() < deadline, "the test server did not start within 20 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


Serve = Callable[..., Any]


@pytest.fixture
def serve(make_app: AppFactory, db: Database, ledger: Ledger, clock: FrozenClock) -> Serve:
    """``with serve(**settings) as live:`` — a live server with these settings overridden."""

    @contextmanager
    def start(**overrides: object) -> Iterator[LiveServer]:
        app = make_app(**overrides)
        with _serving(app) as base_url:
            yield LiveServer(app, base_url, db, ledger, clock, Factory(db, ledger))

    return start


def as_user(live: LiveServer, user: User, **headers: str) -> httpx.Client:
    token = live.make.session_token(user)
    return live.client(headers={"Authorization": f"Bearer {token}", **headers})


def as_operator(live: LiveServer) -> httpx.Client:
    return as_user(live, live.make.operator())


def create_campaign(ops: httpx.Client, **body: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"name": "Welcome", "bucket": "routed", "amount": "10"}
    values.update(body)
    response = ops.post("/admin/api/credits/campaigns", json=values)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def generate(ops: httpx.Client, campaign_id: int, **body: Any) -> list[str]:
    response = ops.post(f"/admin/api/credits/campaigns/{campaign_id}/codes", json=body)
    assert response.status_code == 201, response.text
    return [c["code"] for c in response.json()["codes"]]


def campaign(ops: httpx.Client, campaign_id: int) -> dict[str, Any]:
    response = ops.get(f"/admin/api/credits/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def redeem(http: httpx.Client, code: str) -> httpx.Response:
    return http.post("/api/credits/redeem", json={"code": code})


def row_counts(db: Database) -> dict[str, Any]:
    """Everything a claim could write: a refused one must leave all of it unchanged."""
    with db.read() as conn:

        def count(table: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

        return {
            "entries": count(entries),
            "postings": count(postings),
            "lots": count(lots),
            "redemptions": count(redemptions),
            "audit_events": count(audit_events),
            "campaign_counts": sorted(conn.execute(select(campaigns.c.redeemed_count)).scalars()),
            "code_counts": sorted(conn.execute(select(redeem_codes.c.redeemed_count)).scalars()),
        }


def spend(
    live: LiveServer,
    user: User,
    request_id: str,
    *,
    hold_nanos: int,
    charge_nanos: int | None,
    bucket: str = "routed",
    settle: bool = True,
) -> None:
    """A request through the billing path: a hold (cause ``request``), then — unless
    ``settle`` is False — its settlement and receipt in one transaction."""
    ledger = live.ledger
    with live.db.begin() as conn:
        ledger.place_hold(
            ledger.tx(conn),
            user_id=user.id,
            bucket=bucket,
            amount_nanos=hold_nanos,
            hold_key=request_id,
            ttl_seconds=24 * 3600,
            cause_type="request",
            cause_id=request_id,
        )
    if settle:
        finish(
            live, user, request_id, hold_nanos=hold_nanos, charge_nanos=charge_nanos, bucket=bucket
        )


def finish(
    live: LiveServer,
    user: User,
    request_id: str,
    *,
    hold_nanos: int,
    charge_nanos: int | None,
    bucket: str = "routed",
) -> None:
    ledger = live.ledger
    receipt = Receipt(
        request_id=request_id,
        created_at=to_epoch_us(live.clock.now()),
        user_id=user.id,
        endpoint="/v1/chat/completions",
        model="demo-chat",
        route_type="routed" if bucket == "routed" else "official",
        bucket=bucket,
        currency=ledger.currencies[bucket],
        hold_nanos=hold_nanos,
    )
    with live.db.begin() as conn:
        billing.finish(ledger.tx(conn), ledger, receipt=receipt, charge=charge_nanos)
