"""Manual bank transfers: the user submits a reference, an operator approves with the amount
seen on the statement or rejects with a reason; every decision is audited."""

from __future__ import annotations

import time
from typing import Any

from tallygate.audit.service import list_events
from tallygate.payments import orders
from tests.fixtures.server import LiveServer
from tests.payments.helpers import (
    UNIT,
    as_user,
    assert_reconciled,
    balance,
    create_order,
    entries_with_key,
    get_order,
)


def awaiting(live: LiveServer) -> tuple[Any, dict[str, Any]]:
    user = live.make.user()
    with as_user(live, user) as http:
        order = create_order(http, provider="bank", amount="50.00")
        assert order["actions"] == ["submit_transfer", "cancel"] and order["checkout_url"] is None
        sent = http.post(
            f"/api/payments/orders/{order['id']}/transfer", json={"reference": "BANK-REF-991"}
        )
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "awaiting_review"
    assert sent.json()["transfer_reference"] == "BANK-REF-991"
    return user, order


def audit_actions(live: LiveServer) -> list[tuple[str, str, str]]:
    with live.db.read() as conn:
        return [(e.action, e.actor, e.reason) for e in list_events(live.ledger.tx(conn))]


class TestReview:
    def test_approve_credits_the_statement_amount_and_audits(self, live: LiveServer) -> None:
        user, order = awaiting(live)
        assert balance(live, user.id).balance_nanos == 0  # awaiting review writes nothing
        op = live.make.operator(email="ops@example.com")
        with as_user(live, op) as admin:
            done = admin.post(
                f"/admin/api/payments/orders/{order['id']}/approve",
                json={
                    "amount": "50.00",
                    "currency": "USD",
                    "reason": "seen on statement 2026-01-01",
                },
            )
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "paid" and done.json()["credited_nanos"] == 50 * UNIT
        assert balance(live, user.id).balance_nanos == 50 * UNIT
        assert entries_with_key(live, "topup:bank:") == [
            (f"topup:bank:bank:{order['id']}", "topup")
        ]
        assert (
            "order.approve",
            "ops@example.com",
            "seen on statement 2026-01-01",
        ) in audit_actions(live)
        assert_reconciled(live)

    def test_a_different_statement_amount_needs_an_override(self, live: LiveServer) -> None:
        user, order = awaiting(live)
        with as_user(live, live.make.operator()) as admin:
            url = f"/admin/api/payments/orders/{order['id']}/approve"
            refused = admin.post(url, json={"amount": "45.00", "currency": "USD", "reason": "r"})
            assert (
                refused.status_code == 409 and refused.json()["error"]["code"] == "amount_mismatch"
            )
            done = admin.post(
                url,
                json={
                    "amount": "45.00",
                    "currency": "USD",
                    "reason": "bank fee deducted",
                    "override": True,
                },
            )
        assert done.json()["credited_nanos"] == 45 * UNIT
        assert balance(live, user.id).balance_nanos == 45 * UNIT

    def test_reject_needs_a_reason_and_is_audited(self, live: LiveServer) -> None:
        user, order = awaiting(live)
        with as_user(live, live.make.operator(email="rev@example.com")) as admin:
            url = f"/admin/api/payments/orders/{order['id']}/reject"
            assert admin.post(url, json={"reason": ""}).status_code == 422
            done = admin.post(url, json={"reason": "no such transfer on the statement"})
            again = admin.post(
                f"/admin/api/payments/orders/{order['id']}/approve",
                json={"amount": "50", "currency": "USD", "reason": "oops"},
            )
        assert done.json()["status"] == "rejected" and done.json()["actions"] == []
        assert again.status_code == 409
        assert ("order.reject", "rev@example.com", "no such transfer on the statement") in (
            audit_actions(live)
        )
        with as_user(live, user) as http:
            assert get_order(http, order["id"])["status"] == "rejected"
        assert balance(live, user.id).balance_nanos == 0

    def test_users_cannot_review(self, live: LiveServer) -> None:
        user, order = awaiting(live)
        with as_user(live, user) as http:
            answer = http.post(
                f"/admin/api/payments/orders/{order['id']}/approve",
                json={"amount": "50", "currency": "USD", "reason": "me"},
            )
        assert answer.status_code == 403

    def test_a_manual_refund_of_a_bank_top_up(self, live: LiveServer) -> None:
        user, order = awaiting(live)
        with as_user(live, live.make.operator()) as admin:
            admin.post(
                f"/admin/api/payments/orders/{order['id']}/approve",
                json={"amount": "50", "currency": "USD", "reason": "ok"},
            )
            made = admin.post(
                f"/admin/api/payments/orders/{order['id']}/refunds",
                json={"amount": "20", "reason": "returned by wire"},
            )
        assert made.status_code == 201, made.text
        record = made.json()
        assert record["source"] == "manual" and record["status"] == "succeeded"
        assert record["balance_after"] == "30.00"
        assert balance(live, user.id).balance_nanos == 30 * UNIT
        assert "refund.manual" in [a for a, _, _ in audit_actions(live)]
        assert_reconciled(live)

    def test_awaiting_review_expires_after_the_review_window(self, live: LiveServer) -> None:
        user, order = awaiting(live)
        live.clock.advance(7 * 86_400 + 1)
        for _ in range(100):
            with live.db.read() as conn:
                if orders.get(conn, order["id"])["status"] == "expired":
                    break
            time.sleep(0.05)
        with live.db.read() as conn:
            assert orders.get(conn, order["id"])["status"] == "expired"
