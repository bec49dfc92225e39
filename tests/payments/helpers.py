"""Shared steps for payment tests: users over HTTP, orders, webhook delivery, truth checks."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from sqlalchemy import func, or_, select

from tallygate.ledger.reconcile import reconcile
from tallygate.models.payments import payment_jobs
from tallygate.users.service import User
from tests.fixtures.payments import FakeStripe, sign_stripe
from tests.fixtures.server import LiveServer

UNIT = 1_000_000_000


def as_user(live: LiveServer, user: User) -> httpx.Client:
    return live.client(headers={"Authorization": f"Bearer {live.make.session_token(user)}"})


def create_order(http: httpx.Client, **body: Any) -> dict[str, Any]:
    body = {"bucket": "credit", "amount": "10.00", "provider": "sandbox", **body}
    response = http.post("/api/payments/orders", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def get_order(http: httpx.Client, order_id: str) -> dict[str, Any]:
    response = http.get(f"/api/payments/orders/{order_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def sandbox(http: httpx.Client, order_id: str, action: str, **form: str) -> httpx.Response:
    return http.post(
        f"/sandbox/checkout/{order_id}/{action}",
        data=form,
        headers={"Accept": "application/json"},
    )


def deliver(live: LiveServer, payload: bytes, *, header: str | None = None) -> httpx.Response:
    t = int(live.clock.now().timestamp())
    headers = {"Content-Type": "application/json"}
    if header is None:
        header = sign_stripe(payload, t=t)
    if header:
        headers["Stripe-Signature"] = header
    with live.client() as http:
        answer = http.post("/api/payments/webhooks/stripe", content=payload, headers=headers)
    wait_for_jobs(live)
    return answer


def jobs_due(live: LiveServer) -> int:
    """Webhook jobs queued and due now (by the test clock) or running."""
    J = payment_jobs.c
    now = live.ledger.now_us()
    with live.db.read() as conn:
        stmt = select(func.count()).where(
            or_(J.status == "running", (J.status == "queued") & (J.run_after <= now))
        )
        return int(conn.execute(stmt).scalar_one())


def wait_for_jobs(live: LiveServer, timeout: float = 15) -> None:
    """Wait until the server's job worker has run every due webhook job."""
    deadline = time.monotonic() + timeout
    while jobs_due(live):
        assert time.monotonic() < deadline, "webhook jobs were not processed in time"
        time.sleep(0.02)


def balance(live: LiveServer, user_id: int, bucket: str = "credit") -> Any:
    with live.db.read() as conn:
        return live.ledger.balance(live.ledger.tx(conn), user_id, bucket)


def assert_reconciled(live: LiveServer) -> None:
    with live.db.read() as conn:
        report = reconcile(live.ledger.tx(conn), now_us=live.ledger.now_us(), grace_us=60_000_000)
    assert report.ok, report.lines()


def entries_with_key(live: LiveServer, prefix: str) -> list[tuple[Any, ...]]:
    with live.db.read() as conn:
        return live.ledger.tx(conn).all(
            "SELECT idempotency_key, kind FROM entries WHERE idempotency_key LIKE ? ORDER BY id",
            (prefix + "%",),
        )


def assert_matches_stripe(
    live: LiveServer,
    fake: FakeStripe,
    sid: str,
    user_id: int,
    *,
    rate_nanos_per_minor: int = 10_000_000,
) -> None:
    """The user's net ledger position equals Stripe's final truth for this payment."""
    b = balance(live, user_id)
    assert b.balance_nanos - b.debt_nanos == fake.net_minor(sid) * rate_nanos_per_minor
    assert_reconciled(live)


def dump(value: Any) -> bytes:
    return orjson.dumps(value)
