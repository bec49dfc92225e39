"""Stripe end to end on both databases: the official library against a loopback fake,
webhooks signed with Stripe's real scheme, the ledger checked against Stripe's final truth."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from tallygate.ledger import AccountOwes
from tallygate.models.payments import inbox_events
from tests.fixtures.payments import FakeStripe, sign_stripe
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
    entries_with_key,
    get_order,
)


def stripe_order(live: LiveServer, http: Any, **body: Any) -> tuple[dict[str, Any], str]:
    order = create_order(http, provider="stripe", **body)
    return order, order["provider_reference"]


def refund_entries(live: LiveServer) -> list[tuple[Any, ...]]:
    with live.db.read() as conn:
        return live.ledger.tx(conn).all(
            "SELECT idempotency_key FROM entries WHERE kind = 'refund' ORDER BY id"
        )


def inbox_count(live: LiveServer) -> int:
    with live.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(inbox_events)).scalar_one())


def paid_order(live: LiveServer, fake: FakeStripe) -> tuple[Any, dict[str, Any], str]:
    user = live.make.user()
    with as_user(live, user) as http:
        order, sid = stripe_order(live, http)
    fake.complete(sid)
    assert (
        deliver(live, fake.event("checkout.session.completed", fake.sessions[sid])).status_code
        == 200
    )
    return user, order, sid


class TestCheckout:
    def test_creates_a_checkout_session_through_the_official_library(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        with as_user(live, live.make.user()) as http:
            order, sid = stripe_order(live, http, amount="25.00")
        session = stripe_fake.sessions[sid]
        assert (session["amount_total"], session["currency"]) == (2500, "usd")
        assert session["client_reference_id"] == order["id"]
        assert session["_pi_metadata"] == {"tallygate_order": order["id"]}
        assert session["success_url"].endswith(f"/?order={order['id']}")
        assert order["checkout_url"] == session["url"] and order["test_mode"] is False
        assert ("POST", "/v1/checkout/sessions", f"checkout:{order['id']}") in stripe_fake.requests

    def test_the_return_url_confirms_before_the_webhook(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order, sid = stripe_order(live, http)
            assert http.get(f"/api/payments/orders/{order['id']}/state").json()["phase"] == (
                "confirming"
            )
            stripe_fake.complete(sid)
            state = http.get(f"/api/payments/orders/{order['id']}/state").json()
        assert state["phase"] == "ready" and state["arrived_nanos"] == 10 * UNIT
        assert get_order_of(live, user, order["id"])["history"][-1]["source"] == "redirect"
        assert_matches_stripe(live, stripe_fake, sid, user.id)


def get_order_of(live: LiveServer, user: Any, order_id: str) -> dict[str, Any]:
    with as_user(live, user) as http:
        return get_order(http, order_id)


class TestSignatures:
    def test_a_valid_event_credits_once(self, live: LiveServer, stripe_fake: FakeStripe) -> None:
        user, order, sid = paid_order(live, stripe_fake)
        paid = get_order_of(live, user, order["id"])
        assert paid["status"] == "paid" and paid["provider_payment_id"].startswith("pi_")
        assert [k for k, _ in entries_with_key(live, "topup:")] == [
            f"topup:stripe:{paid['provider_payment_id']}"
        ]
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_the_same_event_ten_times_at_once_credits_once(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            _, sid = stripe_order(live, http)
        stripe_fake.complete(sid)
        payload = stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: deliver(live, payload), range(10)))
        assert [a.status_code for a in answers] == [200] * 10
        assert len(entries_with_key(live, "topup:")) == 1 and inbox_count(live) == 1
        with live.db.read() as conn:
            deliveries = conn.execute(select(inbox_events.c.deliveries)).scalar_one()
        assert deliveries == 10
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_bad_signatures_are_400_and_write_nothing(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            _, sid = stripe_order(live, http)
        stripe_fake.complete(sid)
        payload = stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
        now = int(live.clock.now().timestamp())
        tampered = payload.replace(b'"status":"complete"', b'"status":"complete "')
        reserialized = json.dumps(json.loads(payload), indent=1).encode()
        cases = [
            (tampered, sign_stripe(payload, t=now)),
            (payload, sign_stripe(payload, t=now, secret="whsec_wrong")),
            (payload, sign_stripe(payload, t=now - 301)),
            (payload, ""),
            (reserialized, sign_stripe(payload, t=now)),
            (payload, f"t={now},v0={'0' * 64}"),
        ]
        for body, header in cases:
            answer = deliver(live, body, header=header)
            assert answer.status_code == 400, header
            assert answer.json()["error"]["code"] == "invalid_signature"
        assert inbox_count(live) == 0 and entries_with_key(live, "topup:") == []

    def test_rotation_two_v1_one_valid_is_accepted(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            _, sid = stripe_order(live, http)
        stripe_fake.complete(sid)
        payload = stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
        now = int(live.clock.now().timestamp())
        header = sign_stripe(payload, t=now, extra=["f" * 64])
        assert deliver(live, payload, header=header).status_code == 200
        assert balance(live, user.id).balance_nanos == 10 * UNIT

    def test_several_configured_secrets_during_rotation(
        self, start: ServerFactory, stripe_fake: FakeStripe
    ) -> None:
        live = start(stripe_webhook_secrets=["whsec_old", "whsec_test_secret"])
        user = live.make.user()
        with as_user(live, user) as http:
            _, sid = stripe_order(live, http)
        stripe_fake.complete(sid)
        payload = stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
        now = int(live.clock.now().timestamp())
        assert (
            deliver(
                live, payload, header=sign_stripe(payload, t=now, secret="whsec_old")
            ).status_code
            == 200
        )
        assert balance(live, user.id).balance_nanos == 10 * UNIT


EVENTS = ("completed_unpaid", "async_succeeded", "refunded_300", "refunded_1000", "refund_failed")


def provider_truth_minor(fake: FakeStripe, sid: str) -> int:
    """What Stripe says the user paid for, net: captured − refunds + failed refunds (minor
    units), read from Stripe's own objects as they are now."""
    pi = fake.intents.get(fake.sessions[sid]["payment_intent"] or "")
    if pi is None or pi["status"] != "succeeded":
        return 0
    mine = [r for r in fake.refunds.values() if r["payment_intent"] == pi["id"]]
    refunds = sum(r["amount"] for r in mine)
    failed = sum(r["amount"] for r in mine if r["status"] in ("failed", "canceled"))
    return int(pi["amount_received"]) - refunds + failed


def assert_ledger_is_stripes_truth(live: LiveServer, fake: FakeStripe, sid: str, user: Any) -> None:
    """The user's bucket holds exactly Stripe's truth at 1 USD = 1 credit (10^7 nanos a cent)."""
    b = balance(live, user.id)
    assert (b.balance_nanos, b.debt_nanos) == (provider_truth_minor(fake, sid) * 10**7, 0)


def _completed_unpaid(fake: FakeStripe, sid: str) -> tuple[str, dict[str, Any]]:
    return "checkout.session.completed", fake.complete(sid, paid=False)


def _async_succeeded(fake: FakeStripe, sid: str) -> tuple[str, dict[str, Any]]:
    return "checkout.session.async_payment_succeeded", fake.async_succeed(sid)


def _refund(amount: int) -> Any:
    def step(fake: FakeStripe, sid: str) -> tuple[str, dict[str, Any]]:
        fake.refund(sid, amount)
        return "charge.refunded", fake.charge(sid)  # cumulative, as Stripe sends it

    return step


def _second_refund_fails(fake: FakeStripe, sid: str) -> tuple[str, dict[str, Any]]:
    pi = fake.sessions[sid]["payment_intent"]
    (second,) = [
        r for r in fake.refunds.values() if r["payment_intent"] == pi and r["amount"] == 700
    ]
    return "refund.updated", fake.set_refund_status(second["id"], "failed")


STEPS = [
    ("completed_unpaid", _completed_unpaid),
    ("async_succeeded", _async_succeeded),
    ("refunded_300", _refund(300)),
    ("refunded_1000", _refund(700)),
    ("refund_failed", _second_refund_fails),
]
"""Stripe's side of the payment, in real time order; each step emits the event that
announces it."""


def happen(fake: FakeStripe, sid: str) -> dict[str, bytes]:
    """All of Stripe's steps, then the events they emitted (to be delivered in any order)."""
    return {name: fake.event(*step(fake, sid)) for name, step in STEPS}


def schedules(n: int) -> list[list[tuple[str, int]]]:
    """Every interleaving of Stripe's n steps (in their order) with the n deliveries, each
    delivery coming after the step that emitted its event, in any order among themselves."""
    found: list[list[tuple[str, int]]] = []

    def walk(done: int, delivered: frozenset[int], path: list[tuple[str, int]]) -> None:
        if done == n and len(delivered) == n:
            found.append(path)
            return
        if done < n:
            walk(done + 1, delivered, [*path, ("step", done)])
        for i in range(done):
            if i not in delivered:
                walk(done, delivered | {i}, [*path, ("deliver", i)])

    walk(0, frozenset(), [])
    return found


class TestOrderIndependence:
    def test_every_permutation_ends_at_stripes_final_truth(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        """Every delivery order of the five events, after all of them happened at Stripe."""
        for order_of_events in itertools.permutations(EVENTS):
            user = live.make.user()
            with as_user(live, user) as http:
                order, sid = stripe_order(live, http)
            events = happen(stripe_fake, sid)
            for name in order_of_events:
                assert deliver(live, events[name]).status_code == 200
            # Stripe's truth: 1000 captured − (300 + 700) refunded + 700 failed = 700.
            assert provider_truth_minor(stripe_fake, sid) == 700
            assert_ledger_is_stripes_truth(live, stripe_fake, sid, user)
            final = get_order_of(live, user, order["id"])
            assert final["refund_state"] == "partial" and final["refunded_minor"] == 300
            assert sorted((r["refunded_minor"], r["status"]) for r in final["refunds"]) == [
                (300, "succeeded"),
                (700, "failed"),
            ], order_of_events
        assert_reconciled(live)

    def test_deliveries_interleaved_with_stripes_steps_track_its_truth(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        """Events delivered while Stripe moves on, in every 40th of the 945 possible schedules
        (each delivery after its step, in any order): after every delivery the ledger equals
        Stripe's truth at that moment — so a refund booked and then failed is re-credited once
        — and every schedule ends at the same final truth with one debit per refund id."""
        every = schedules(len(STEPS))
        assert len(every) == 945
        booked_then_failed = 0
        for schedule in every[::40]:
            user = live.make.user()
            with as_user(live, user) as http:
                order, sid = stripe_order(live, http)
            emitted: dict[int, bytes] = {}
            for what, i in schedule:
                if what == "step":
                    emitted[i] = stripe_fake.event(*STEPS[i][1](stripe_fake, sid))
                else:
                    assert deliver(live, emitted[i]).status_code == 200
                    assert_ledger_is_stripes_truth(live, stripe_fake, sid, user)
            assert provider_truth_minor(stripe_fake, sid) == 700
            final = get_order_of(live, user, order["id"])
            assert final["refund_state"] == "partial" and final["refunded_minor"] == 300
            by_amount = {r["refunded_minor"]: r["provider_refund_id"] for r in final["refunds"]}
            debits = Counter(k for k, _ in entries_with_key(live, "refund:stripe:"))
            assert debits[f"refund:stripe:{by_amount[300]}"] == 1, schedule
            booked = debits[f"refund:stripe:{by_amount[700]}"]  # 1 if it was seen succeeded
            recredits = entries_with_key(live, f"refund_failed:refund:stripe:{by_amount[700]}")
            assert booked <= 1 and len(recredits) == booked, schedule
            booked_then_failed += booked
        # Both paths were walked: the failed refund booked then re-credited, and never booked.
        assert 0 < booked_then_failed < len(every[::40])
        assert_reconciled(live)

    def test_events_delivered_while_stripe_moves_on(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        """Each event is delivered late, after later changes already happened."""
        user = live.make.user()
        with as_user(live, user) as http:
            _, sid = stripe_order(live, http)
        completed = stripe_fake.event(
            "checkout.session.completed", stripe_fake.complete(sid, paid=False)
        )
        assert deliver(live, completed).status_code == 200
        assert balance(live, user.id).balance_nanos == 0
        succeeded = stripe_fake.event(
            "checkout.session.async_payment_succeeded", stripe_fake.async_succeed(sid)
        )
        first = stripe_fake.refund(sid, 400)
        refunded = stripe_fake.event("charge.refunded", stripe_fake.charge(sid))
        assert deliver(live, refunded).status_code == 200  # before "succeeded" arrives
        assert_matches_stripe(live, stripe_fake, sid, user.id)
        stripe_fake.set_refund_status(first["id"], "failed")
        assert deliver(live, succeeded).status_code == 200
        assert_matches_stripe(live, stripe_fake, sid, user.id)
        assert balance(live, user.id).balance_nanos == 10 * UNIT

    def test_a_stale_cumulative_refund_changes_nothing(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, _, sid = paid_order(live, stripe_fake)
        stripe_fake.refund(sid, 300)
        small = stripe_fake.event("charge.refunded", stripe_fake.charge(sid))
        stripe_fake.refund(sid, 700)
        large = stripe_fake.event("charge.refunded", stripe_fake.charge(sid))
        deliver(live, large)
        before = balance(live, user.id)
        deliver(live, small)
        assert balance(live, user.id) == before
        assert (before.balance_nanos, before.debt_nanos) == (0, 0)
        assert len(entries_with_key(live, "refund:stripe:")) == 2
        assert_matches_stripe(live, stripe_fake, sid, user.id)


class TestRefunds:
    def test_one_refund_announced_by_three_event_types_is_one_debit(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, sid = paid_order(live, stripe_fake)
        refund = stripe_fake.refund(sid, 250)
        for kind, obj in [
            ("refund.created", refund),
            ("charge.refunded", stripe_fake.charge(sid)),
            ("refund.updated", refund),
        ]:
            assert deliver(live, stripe_fake.event(kind, obj)).status_code == 200
        assert entries_with_key(live, "refund:") == [(f"refund:stripe:{refund['id']}", "refund")]
        (record,) = get_order_of(live, user, order["id"])["refunds"]
        assert record["provider_refund_id"] == refund["id"] and record["source"] == "webhook"
        assert record["duplicates_suppressed"] == 2
        assert record["refunded_nanos"] == 2_500_000_000 and record["balance_after"] == "7.50"
        assert record["debit_entry"]["idempotency_key"] == f"refund:stripe:{refund['id']}"
        assert record["credit_already_used"] is False and record["next_action"].startswith("none")
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_an_operator_refund_and_its_webhook_are_one_debit(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, sid = paid_order(live, stripe_fake)
        with as_user(live, live.make.operator()) as admin:
            body = {"amount": "4.00", "reason": "goodwill", "idempotency_key": "tick-42"}
            made = admin.post(f"/admin/api/payments/orders/{order['id']}/refunds", json=body)
            again = admin.post(f"/admin/api/payments/orders/{order['id']}/refunds", json=body)
            too_much = admin.post(
                f"/admin/api/payments/orders/{order['id']}/refunds",
                json={"amount": "6.01", "reason": "x"},
            )
        assert made.status_code == 201, made.text
        record = made.json()
        assert again.json()["id"] == record["id"] and too_much.status_code == 409
        (re_id,) = list(stripe_fake.refunds)
        assert record["provider_refund_id"] == re_id and record["source"] == "admin"
        assert record["idempotency_key"] == "refund:stripe:op:tick-42"
        assert ("POST", "/v1/refunds", "refund:stripe:op:tick-42") in stripe_fake.requests
        assert (
            deliver(
                live, stripe_fake.event("refund.created", stripe_fake.refunds[re_id])
            ).status_code
            == 200
        )
        assert (
            deliver(live, stripe_fake.event("charge.refunded", stripe_fake.charge(sid))).status_code
            == 200
        )
        assert len(refund_entries(live)) == 1
        (listed,) = get_order_of(live, user, order["id"])["refunds"]
        assert listed["hold_status"] == "settled" and listed["held_nanos"] == 4 * UNIT
        assert listed["debit_entry"]["idempotency_key"] == "settle:hold:refund:stripe:op:tick-42"
        assert balance(live, user.id).balance_nanos == 6 * UNIT
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_a_webhook_that_beats_the_stored_id_finds_the_record_by_metadata(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, sid = paid_order(live, stripe_fake)
        stripe_fake.refund_status = "pending"
        with as_user(live, live.make.operator()) as admin:
            made = admin.post(
                f"/admin/api/payments/orders/{order['id']}/refunds", json={"reason": "full refund"}
            ).json()
        (re_id,) = list(stripe_fake.refunds)
        assert stripe_fake.refunds[re_id]["metadata"] == {"tallygate_refund": made["id"]}
        with live.db.begin() as conn:  # as if the webhook came before we stored Stripe's id
            from tallygate.models.payments import refunds

            conn.execute(refunds.update().values(provider_refund_id=None))
        stripe_fake.set_refund_status(re_id, "succeeded")
        deliver(live, stripe_fake.event("refund.updated", stripe_fake.refunds[re_id]))
        (record,) = get_order_of(live, user, order["id"])["refunds"]
        assert record["provider_refund_id"] == re_id and record["status"] == "succeeded"
        assert len(refund_entries(live)) == 1
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_a_refund_that_fails_later_is_recredited_once(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, _, sid = paid_order(live, stripe_fake)
        refund = stripe_fake.refund(sid, 1000)
        deliver(live, stripe_fake.event("charge.refunded", stripe_fake.charge(sid)))
        assert balance(live, user.id).balance_nanos == 0
        failed = stripe_fake.event(
            "charge.refund.updated", stripe_fake.set_refund_status(refund["id"], "failed")
        )
        for _ in range(3):
            deliver(live, failed)
        deliver(live, stripe_fake.event("refund.failed", stripe_fake.refunds[refund["id"]]))
        assert balance(live, user.id).balance_nanos == 10 * UNIT
        assert len(entries_with_key(live, "refund_failed:")) == 1
        assert_matches_stripe(live, stripe_fake, sid, user.id)


class TestDisputes:
    def test_withdrawn_then_won_nets_zero(self, live: LiveServer, stripe_fake: FakeStripe) -> None:
        user, order, sid = paid_order(live, stripe_fake)
        dispute = stripe_fake.dispute(sid)
        deliver(live, stripe_fake.event("charge.dispute.created", dispute))
        withdrawn = stripe_fake.event(
            "charge.dispute.funds_withdrawn", stripe_fake.withdraw(dispute["id"])
        )
        deliver(live, withdrawn)
        deliver(live, withdrawn)
        assert balance(live, user.id).balance_nanos == 0
        flagged = get_order_of(live, user, order["id"])
        assert flagged["dispute_state"] == "open" and flagged["flag"] == "disputed"
        deliver(
            live,
            stripe_fake.event("charge.dispute.closed", stripe_fake.close(dispute["id"], won=True)),
        )
        assert balance(live, user.id).balance_nanos == 10 * UNIT
        assert get_order_of(live, user, order["id"])["dispute_state"] == "won"
        assert len(entries_with_key(live, "dispute:stripe:")) == 2
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_lost_keeps_the_withdrawal_and_spent_money_becomes_debt(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, sid = paid_order(live, stripe_fake)
        live.make.spend(user.id, 6 * UNIT)
        dispute = stripe_fake.dispute(sid)
        stripe_fake.withdraw(dispute["id"])
        deliver(
            live,
            stripe_fake.event("charge.dispute.closed", stripe_fake.close(dispute["id"], won=False)),
        )
        b = balance(live, user.id)
        assert (b.balance_nanos, b.debt_nanos) == (0, 6 * UNIT)
        assert get_order_of(live, user, order["id"])["dispute_state"] == "lost"
        assert_reconciled(live)


def spend_as_requests(live: LiveServer, user_id: int, amounts: list[int]) -> None:
    for n, amount in enumerate(amounts):
        with live.db.begin() as conn:
            live.ledger.debit(
                live.ledger.tx(conn),
                user_id=user_id,
                bucket="credit",
                amount_nanos=amount,
                kind="usage",
                destination="revenue:usage",
                idempotency_key=f"usage:{user_id}:{n}",
                cause_type="request",
                cause_id=f"req_{user_id}_{n}",
            )


class TestRefundAfterSpend:
    def test_debt_policy(self, live: LiveServer, stripe_fake: FakeStripe) -> None:
        user, order, sid = paid_order(live, stripe_fake)
        spend_as_requests(live, user.id, [5 * UNIT, 3 * UNIT])
        stripe_fake.refund(sid, 1000)  # from Stripe's dashboard
        deliver(live, stripe_fake.event("charge.refunded", stripe_fake.charge(sid)))
        b = balance(live, user.id)
        assert (b.balance_nanos, b.debt_nanos) == (0, 8 * UNIT)
        (record,) = get_order_of(live, user, order["id"])["refunds"]
        assert record["credit_already_used"] is True
        assert record["credit_used_nanos"] == 8 * UNIT
        assert record["receipts"] == [f"req_{user.id}_0", f"req_{user.id}_1"]
        assert (record["taken_nanos"], record["debt_nanos"]) == (2 * UNIT, 8 * UNIT)
        assert record["shortfall_state"] == "debt" and "blocked" in record["next_action"]
        with pytest.raises(AccountOwes):
            live.make.hold(user.id, UNIT, key="after-refund")
        # The next top-up of 10 pays the debt of 8 first and leaves 2.
        _, _, sid2 = paid_order_for(live, stripe_fake, user)
        b = balance(live, user.id)
        assert (b.balance_nanos, b.debt_nanos) == (2 * UNIT, 0)
        assert_reconciled(live)

    def test_review_policy(self, start: ServerFactory, stripe_fake: FakeStripe) -> None:
        live = start(refund_shortfall_policy="review")
        user, order, sid = paid_order(live, stripe_fake)
        spend_as_requests(live, user.id, [8 * UNIT])
        stripe_fake.refund(sid, 1000)
        deliver(live, stripe_fake.event("charge.refunded", stripe_fake.charge(sid)))
        # The shortfall is booked as debt awaiting a decision: the bucket is blocked with
        # account_owes (not a bare insufficient_balance) until an operator decides.
        b = balance(live, user.id)
        assert (b.balance_nanos, b.debt_nanos) == (0, 8 * UNIT)
        (record,) = get_order_of(live, user, order["id"])["refunds"]
        assert record["shortfall_state"] == "awaiting_decision"
        assert (record["taken_nanos"], record["debt_nanos"], record["shortfall_nanos"]) == (
            2 * UNIT,
            8 * UNIT,
            8 * UNIT,
        )
        assert "account_owes" in record["next_action"] and "decision" in record["next_action"]
        assert record["receipts"] == [f"req_{user.id}_0"]
        with pytest.raises(AccountOwes) as refused:
            live.make.hold(user.id, UNIT, key="awaiting-decision")
        assert refused.value.code == "account_owes" and refused.value.debt_nanos == 8 * UNIT
        with as_user(live, live.make.operator()) as admin:
            listed = admin.get(
                "/admin/api/payments/refunds", params={"shortfall_state": "awaiting_decision"}
            ).json()
            assert [r["id"] for r in listed["items"]] == [record["id"]]
            decided = admin.post(
                f"/admin/api/payments/refunds/{record['id']}/decision",
                json={"decision": "debt", "reason": "customer will top up"},
            )
            twice = admin.post(
                f"/admin/api/payments/refunds/{record['id']}/decision",
                json={"decision": "write_off", "reason": "changed mind"},
            )
        assert decided.status_code == 200 and decided.json()["shortfall_state"] == "debt"
        assert twice.status_code == 409
        assert balance(live, user.id).debt_nanos == 8 * UNIT
        with pytest.raises(AccountOwes):
            live.make.hold(user.id, UNIT, key="after-decision")
        # The next top-up of 10 pays the debt of 8 first and leaves 2; the bucket is usable.
        paid_order_for(live, stripe_fake, user)
        b = balance(live, user.id)
        assert (b.balance_nanos, b.debt_nanos) == (2 * UNIT, 0)
        live.make.hold(user.id, UNIT, key="after-repaid")
        assert_reconciled(live)

    def test_review_write_off(self, start: ServerFactory, stripe_fake: FakeStripe) -> None:
        live = start(refund_shortfall_policy="review")
        user, order, sid = paid_order(live, stripe_fake)
        spend_as_requests(live, user.id, [8 * UNIT])
        stripe_fake.refund(sid, 1000)
        deliver(live, stripe_fake.event("charge.refunded", stripe_fake.charge(sid)))
        (record,) = get_order_of(live, user, order["id"])["refunds"]
        with as_user(live, live.make.operator()) as admin:
            done = admin.post(
                f"/admin/api/payments/refunds/{record['id']}/decision",
                json={"decision": "write_off", "reason": "small amount"},
            )
        assert done.json()["shortfall_state"] == "written_off"
        b = balance(live, user.id)
        assert (b.balance_nanos, b.debt_nanos) == (0, 0)
        with live.db.read() as conn:
            from tallygate.audit.service import list_events

            actions = [e.action for e in list_events(live.ledger.tx(conn))]
        assert "refund.shortfall.write_off" in actions
        assert_reconciled(live)


def paid_order_for(
    live: LiveServer, fake: FakeStripe, user: Any
) -> tuple[Any, dict[str, Any], str]:
    with as_user(live, user) as http:
        order, sid = stripe_order(live, http)
    fake.complete(sid)
    deliver(live, fake.event("checkout.session.completed", fake.sessions[sid]))
    return user, order, sid


class TestLateAndMismatch:
    def test_a_paid_event_after_expiry_is_credited_and_said(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order, sid = stripe_order(live, http)
            deliver(live, stripe_fake.event("checkout.session.expired", stripe_fake.expire(sid)))
            assert get_order(http, order["id"])["status"] == "expired"
            stripe_fake.sessions[sid]["status"] = "open"  # a payment raced the expiry
            stripe_fake.complete(sid)
            deliver(
                live, stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
            )
            paid = get_order(http, order["id"])
        assert paid["status"] == "paid" and paid["paid_after_expiry"] is True
        assert_matches_stripe(live, stripe_fake, sid, user.id)

    def test_an_amount_mismatch_flags_and_credits_nothing(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order, sid = stripe_order(live, http)
            stripe_fake.complete(sid, amount=999)
            deliver(
                live, stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
            )
            flagged = get_order(http, order["id"])
        assert flagged["status"] == "pending" and flagged["flag"] == "amount_mismatch"
        assert "9.99 USD" in flagged["flag_detail"] and "10.00 USD" in flagged["flag_detail"]
        assert balance(live, user.id).balance_nanos == 0

    def test_an_unprocessable_event_is_kept_and_retried_by_the_sweeper(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            _, sid = stripe_order(live, http)
        stripe_fake.complete(sid)
        url = stripe_fake.url
        stripe_fake.url = ""
        payload = stripe_fake.event("checkout.session.completed", stripe_fake.sessions[sid])
        saved = stripe_fake.sessions.pop(sid)
        assert deliver(live, payload).status_code == 200  # stored; Stripe said 404
        assert balance(live, user.id).balance_nanos == 0
        stripe_fake.sessions[sid] = saved
        stripe_fake.url = url
        live.clock.advance(11)
        deadline = time.monotonic() + 5
        while balance(live, user.id).balance_nanos == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert balance(live, user.id).balance_nanos == 10 * UNIT
        assert_matches_stripe(live, stripe_fake, sid, user.id)
