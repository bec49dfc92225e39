"""Every operator action on top-ups and refunds — approve, reject, override, refund (through
the provider or recorded manually), decide a shortfall either way — writes an audit event
naming the operator, the order or refund it acted on, and the reason the operator gave."""

from __future__ import annotations

from typing import Any

from tallygate.audit.service import list_events
from tests.fixtures.payments import FakeStripe
from tests.fixtures.server import LiveServer
from tests.payments.conftest import ServerFactory
from tests.payments.helpers import UNIT, as_user, create_order, deliver, sandbox
from tests.payments.test_stripe import paid_order, spend_as_requests


def audited(live: LiveServer) -> list[tuple[str, str, str, str]]:
    with live.db.read() as conn:
        return [
            (e.action, e.actor, e.target, e.reason)
            for e in reversed(list_events(live.ledger.tx(conn), limit=1000))
        ]


def bank_order_awaiting_review(live: LiveServer) -> str:
    with as_user(live, live.make.user()) as http:
        order = create_order(http, provider="bank", amount="20.00")
        sent = http.post(f"/api/payments/orders/{order['id']}/transfer", json={"reference": "R-1"})
    assert sent.status_code == 200, sent.text
    return str(order["id"])


def test_every_operator_action_is_audited_with_its_reason(
    start: ServerFactory, stripe_fake: FakeStripe
) -> None:
    live = start(refund_shortfall_policy="review")
    op = live.make.operator(email="ops@example.com")
    approved, rejected = bank_order_awaiting_review(live), bank_order_awaiting_review(live)
    with as_user(live, live.make.user()) as http:
        mismatched = create_order(http)["id"]
        sandbox(http, mismatched, "pay", amount="9.00")
    _, stripe_order, _ = paid_order(live, stripe_fake)  # refunded through Stripe
    spender, spent_order, sid = paid_order(live, stripe_fake)  # refund leaves a shortfall
    spend_as_requests(live, spender.id, [8 * UNIT])
    stripe_fake.refund(sid, 1000)
    deliver(live, stripe_fake.event("charge.refunded", stripe_fake.charge(sid)))

    def post(admin: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = admin.post(url, json=body)
        assert answer.status_code in (200, 201), (url, answer.text)
        return answer.json()  # type: ignore[no-any-return]

    orders = "/admin/api/payments/orders"
    with as_user(live, op) as admin:
        post(
            admin,
            f"{orders}/{approved}/approve",
            {"amount": "20.00", "currency": "USD", "reason": "on the statement"},
        )
        post(admin, f"{orders}/{rejected}/reject", {"reason": "no such transfer"})
        post(admin, f"{orders}/{mismatched}/override", {"reason": "customer paid 9, confirmed"})
        post(admin, f"{orders}/{approved}/refunds", {"amount": "5", "reason": "returned by wire"})
        post(admin, f"{orders}/{stripe_order['id']}/refunds", {"amount": "1", "reason": "goodwill"})
        listed = admin.get(
            "/admin/api/payments/refunds", params={"shortfall_state": "awaiting_decision"}
        ).json()["items"]
        (shortfall,) = [r for r in listed if r["order_id"] == spent_order["id"]]
        post(
            admin,
            f"/admin/api/payments/refunds/{shortfall['id']}/decision",
            {"decision": "debt", "reason": "will top up"},
        )

    trail = audited(live)
    expected = [
        ("order.approve", f"order:{approved}", "on the statement"),
        ("order.reject", f"order:{rejected}", "no such transfer"),
        ("order.override", f"order:{mismatched}", "customer paid 9, confirmed"),
        ("refund.manual", f"order:{approved}", "returned by wire"),
        ("refund.start", f"order:{stripe_order['id']}", "goodwill"),
        ("refund.shortfall.debt", f"refund:{shortfall['id']}", "will top up"),
    ]
    by_operator = [(a, t, r) for a, actor, t, r in trail if actor == "ops@example.com"]
    assert by_operator == expected
