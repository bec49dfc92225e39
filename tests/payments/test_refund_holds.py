"""In-flight refunds hold their money (a ledger hold: not spendable, not yet taken) until the
provider answers: success settles the hold into the refund's one debit, failure releases it;
the order's refund_state is ``pending`` meanwhile. Both databases, real server, fake Stripe."""

from __future__ import annotations

from typing import Any

import pytest

from tallygate.ledger import AccountOwes, InsufficientBalance
from tests.fixtures.payments import FakeStripe
from tests.fixtures.server import LiveServer
from tests.payments.conftest import ServerFactory
from tests.payments.helpers import (
    UNIT,
    as_user,
    assert_matches_stripe,
    assert_reconciled,
    balance,
    create_order,
    deliver,
    get_order,
)


def paid(live: LiveServer, fake: FakeStripe) -> tuple[Any, dict[str, Any], str]:
    user = live.make.user()
    with as_user(live, user) as http:
        order = create_order(http, provider="stripe")
    sid = order["provider_reference"]
    fake.complete(sid)
    deliver(live, fake.event("checkout.session.completed", fake.sessions[sid]))
    return user, order, sid


def operator_refund(live: LiveServer, order_id: str, **body: Any) -> Any:
    with as_user(live, live.make.operator()) as admin:
        return admin.post(
            f"/admin/api/payments/orders/{order_id}/refunds", json={"reason": "asked", **body}
        )


def order_of(live: LiveServer, user: Any, order_id: str) -> dict[str, Any]:
    with as_user(live, user) as http:
        return get_order(http, order_id)


def refund_entries(live: LiveServer) -> list[Any]:
    with live.db.read() as conn:
        return live.ledger.tx(conn).all("SELECT id FROM entries WHERE kind = 'refund'")


class TestInFlight:
    def test_a_pending_refund_holds_its_money_then_success_takes_it_once(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, sid = paid(live, stripe_fake)
        stripe_fake.refund_status = "pending"
        made = operator_refund(live, order["id"], amount="4.00")
        assert made.status_code == 201, made.text
        record = made.json()
        assert (record["status"], record["hold_status"], record["held_nanos"]) == (
            "pending",
            "pending",
            4 * UNIT,
        )
        assert "held" in record["next_action"] and record["debit_entry"] is None
        b = balance(live, user.id)
        assert (b.balance_nanos, b.held_nanos, b.available_nanos) == (10 * UNIT, 4 * UNIT, 6 * UNIT)
        pending = order_of(live, user, order["id"])
        assert pending["refund_state"] == "pending" and pending["refunded_minor"] == 0
        assert "held until the provider confirms" in pending["history"][-1]["detail"]
        # The held money cannot be spent while Stripe processes the refund.
        with pytest.raises(InsufficientBalance):
            live.make.hold(user.id, 7 * UNIT, key="too-much")
        live.make.hold(user.id, 6 * UNIT, key="fits")
        with live.db.begin() as conn:
            live.ledger.release_hold(live.ledger.tx(conn), hold_key="fits")

        (re_id,) = list(stripe_fake.refunds)
        settled = stripe_fake.set_refund_status(re_id, "succeeded")
        for _ in range(2):
            deliver(live, stripe_fake.event("refund.updated", settled))
        b = balance(live, user.id)
        assert (b.balance_nanos, b.held_nanos) == (6 * UNIT, 0)
        done = order_of(live, user, order["id"])
        assert done["refund_state"] == "partial" and done["refunded_minor"] == 400
        (record,) = done["refunds"]
        assert (record["status"], record["hold_status"], record["taken_nanos"]) == (
            "succeeded",
            "settled",
            4 * UNIT,
        )
        assert record["debit_entry"]["kind"] == "refund" and len(refund_entries(live)) == 1
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_a_pending_refund_that_fails_releases_its_hold_and_takes_nothing(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, sid = paid(live, stripe_fake)
        stripe_fake.refund_status = "pending"
        assert operator_refund(live, order["id"]).status_code == 201
        assert balance(live, user.id).held_nanos == 10 * UNIT
        (re_id,) = list(stripe_fake.refunds)
        failed = stripe_fake.set_refund_status(re_id, "failed")
        for kind in ("refund.failed", "refund.updated", "charge.refund.updated"):
            deliver(live, stripe_fake.event(kind, failed))
        b = balance(live, user.id)
        assert (b.balance_nanos, b.held_nanos, b.debt_nanos) == (10 * UNIT, 0, 0)
        after = order_of(live, user, order["id"])
        assert after["refund_state"] == "none" and after["refunded_minor"] == 0
        (record,) = after["refunds"]
        assert (record["status"], record["hold_status"], record["debit_entry"]) == (
            "failed",
            "released",
            None,
        )
        released = [h for h in after["history"] if "released" in h["detail"]]
        assert len(released) == 1  # three notices, one release
        assert refund_entries(live) == []
        # Nothing was refunded, so the whole payment may be refunded again.
        stripe_fake.refund_status = "succeeded"
        again = operator_refund(live, order["id"])
        assert again.status_code == 201 and again.json()["refunded_minor"] == 1000
        assert balance(live, user.id).balance_nanos == 0
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_a_provider_refusal_releases_the_hold(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, _ = paid(live, stripe_fake)
        stripe_fake.intents.clear()  # Stripe answers 400: no such payment intent
        refused = operator_refund(live, order["id"], amount="3.00")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "provider_error"
        b = balance(live, user.id)
        assert (b.balance_nanos, b.held_nanos) == (10 * UNIT, 0)
        after = order_of(live, user, order["id"])
        assert after["refund_state"] == "none"
        assert [r["hold_status"] for r in after["refunds"]] == ["released"]
        assert_reconciled(live)

    def test_a_pending_refund_after_spending_holds_what_is_left_and_books_the_rest_as_debt(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, sid = paid(live, stripe_fake)
        live.make.spend(user.id, 8 * UNIT)
        stripe_fake.refund_status = "pending"
        record = operator_refund(live, order["id"]).json()
        assert record["held_nanos"] == 2 * UNIT
        assert balance(live, user.id).available_nanos == 0
        (re_id,) = list(stripe_fake.refunds)
        deliver(
            live,
            stripe_fake.event("refund.updated", stripe_fake.set_refund_status(re_id, "succeeded")),
        )
        b = balance(live, user.id)
        assert (b.balance_nanos, b.held_nanos, b.debt_nanos) == (0, 0, 8 * UNIT)
        (record,) = order_of(live, user, order["id"])["refunds"]
        assert (record["taken_nanos"], record["debt_nanos"], record["shortfall_state"]) == (
            2 * UNIT,
            8 * UNIT,
            "debt",
        )
        assert record["credit_used_nanos"] == 8 * UNIT
        with pytest.raises(AccountOwes):
            live.make.hold(user.id, UNIT, key="blocked")
        # Stripe's truth is a full refund (net 0); the user had spent 8 of it: owes 8.
        assert stripe_fake.net_minor(sid) == 0
        assert_reconciled(live)


class TestReviewShortfall:
    def test_a_written_off_shortfall_of_a_refund_that_later_fails_is_not_given_twice(
        self, start: ServerFactory, stripe_fake: FakeStripe
    ) -> None:
        live = start(refund_shortfall_policy="review")
        user, order, sid = paid(live, stripe_fake)
        live.make.spend(user.id, 8 * UNIT)
        refund = stripe_fake.refund(sid, 1000)
        deliver(live, stripe_fake.event("charge.refunded", stripe_fake.charge(sid)))
        (record,) = order_of(live, user, order["id"])["refunds"]
        assert record["shortfall_state"] == "awaiting_decision"
        assert balance(live, user.id).debt_nanos == 8 * UNIT
        with as_user(live, live.make.operator()) as admin:
            done = admin.post(
                f"/admin/api/payments/refunds/{record['id']}/decision",
                json={"decision": "write_off", "reason": "goodwill"},
            )
        assert done.status_code == 200 and done.json()["shortfall_state"] == "written_off"
        b = balance(live, user.id)
        assert (b.balance_nanos, b.debt_nanos) == (0, 0)
        with pytest.raises(InsufficientBalance):  # no longer owed: only empty
            live.make.hold(user.id, UNIT, key="unblocked")
        # Stripe later reports the refund failed: the user gets back what the refund cost
        # them (the 2 taken), not the 8 already forgiven.
        failed = stripe_fake.set_refund_status(refund["id"], "failed")
        deliver(live, stripe_fake.event("refund.failed", failed))
        b = balance(live, user.id)
        assert (b.balance_nanos, b.debt_nanos) == (2 * UNIT, 0)
        assert_reconciled(live)
