"""Four eyes on manual bank transfers (research §6.2.1: "a second reviewer is required above a
threshold"), on both databases: above the operator-set threshold the first approval only
records what it saw; a second, different operator seeing the same amount credits it once."""

from __future__ import annotations

from typing import Any

from tallygate.audit.service import list_events
from tests.fixtures.server import LiveServer
from tests.payments.conftest import ServerFactory
from tests.payments.helpers import UNIT, as_user, assert_reconciled, balance, create_order


def awaiting(live: LiveServer, amount: str) -> tuple[Any, dict[str, Any]]:
    user = live.make.user()
    with as_user(live, user) as http:
        order = create_order(http, provider="bank", amount=amount)
        sent = http.post(f"/api/payments/orders/{order['id']}/transfer", json={"reference": "R-1"})
    assert sent.status_code == 200, sent.text
    return user, order


def approve(
    live: LiveServer, operator: Any, order_id: str, amount: str, *, override: bool = False
) -> Any:
    with as_user(live, operator) as admin:
        return admin.post(
            f"/admin/api/payments/orders/{order_id}/approve",
            json={
                "amount": amount,
                "currency": "USD",
                "reason": f"statement shows {amount}",
                "override": override,
            },
        )


def actions(live: LiveServer) -> list[tuple[str, str]]:
    with live.db.read() as conn:
        return [(e.action, e.actor) for e in list_events(live.ledger.tx(conn))]


class TestFourEyes:
    def test_above_the_threshold_two_different_operators_must_approve(
        self, start: ServerFactory
    ) -> None:
        live = start(bank_second_review_above="1000")
        user, order = awaiting(live, "1500.00")
        first = live.make.operator(email="first@example.com")
        second = live.make.operator(email="second@example.com")

        one = approve(live, first, order["id"], "1500.00")
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["status"] == "awaiting_review" and body["credited_nanos"] is None
        assert body["first_approval"]["operator"] == "first@example.com"
        assert body["first_approval"]["amount_minor"] == 150_000
        assert "second, different operator" in body["history"][-1]["detail"]
        assert balance(live, user.id).balance_nanos == 0

        again = approve(live, first, order["id"], "1500.00")  # the same operator twice
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "second_reviewer_required"
        # The second reviewer reads another amount off the statement (and would override).
        other_amount = approve(live, second, order["id"], "1400.00", override=True)
        assert other_amount.status_code == 409
        assert other_amount.json()["error"]["code"] == "approval_mismatch"
        assert balance(live, user.id).balance_nanos == 0

        two = approve(live, second, order["id"], "1500.00")
        assert two.status_code == 200, two.text
        assert two.json()["status"] == "paid" and two.json()["credited_nanos"] == 1500 * UNIT
        assert balance(live, user.id).balance_nanos == 1500 * UNIT
        assert approve(live, first, order["id"], "1500.00").status_code == 409  # closed now
        assert balance(live, user.id).balance_nanos == 1500 * UNIT
        audited = actions(live)
        assert ("order.approve.first", "first@example.com") in audited
        assert ("order.approve", "second@example.com") in audited
        assert_reconciled(live)

    def test_at_or_below_the_threshold_one_approval_credits(self, start: ServerFactory) -> None:
        live = start(bank_second_review_above="1000")
        user, order = awaiting(live, "1000.00")
        done = approve(live, live.make.operator(), order["id"], "1000.00")
        assert done.status_code == 200 and done.json()["status"] == "paid"
        assert done.json()["first_approval"] is None
        assert balance(live, user.id).balance_nanos == 1000 * UNIT

    def test_a_first_approval_can_still_be_rejected(self, start: ServerFactory) -> None:
        live = start(bank_second_review_above="1000")
        user, order = awaiting(live, "2000.00")
        first = live.make.operator(email="a@example.com")
        assert approve(live, first, order["id"], "2000.00").json()["status"] == "awaiting_review"
        with as_user(live, live.make.operator(email="b@example.com")) as admin:
            rejected = admin.post(
                f"/admin/api/payments/orders/{order['id']}/reject",
                json={"reason": "no such transfer on the statement"},
            )
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
        assert approve(live, first, order["id"], "2000.00").status_code == 409
        assert balance(live, user.id).balance_nanos == 0
