"""Top-up orders over HTTP on both databases: the sandbox walks every state, the sweeper
expires by the test clock, only ``paid`` creates balance, conversion is exact."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.fixtures.server import LiveServer
from tests.payments.conftest import ServerFactory
from tests.payments.helpers import (
    UNIT,
    as_user,
    assert_reconciled,
    balance,
    create_order,
    entries_with_key,
    get_order,
    sandbox,
)


def wait_for(http: httpx.Client, order_id: str, status: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        order = get_order(http, order_id)
        if order["status"] == status or time.monotonic() > deadline:
            return order
        time.sleep(0.02)


def statuses(order: dict[str, Any]) -> list[str]:
    return [h["to_status"] for h in order["history"]]


class TestCreate:
    def test_a_new_order_is_pending_quoted_and_marked_test_mode(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http, amount="12.50")
        assert order["status"] == "pending"
        assert order["test_mode"] is True and order["provider"] == "sandbox"
        assert (order["amount_minor"], order["currency"]) == (1250, "USD")
        assert order["quoted_nanos"] == 12_500_000_000 and order["rate"] == "1"
        assert order["actions"] == ["pay", "cancel"]
        assert order["checkout_url"].endswith(f"/sandbox/checkout/{order['id']}")
        assert statuses(order) == ["pending"]
        assert balance(live, user.id).balance_nanos == 0

    def test_limits_and_currencies_are_enforced(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            bad = [
                {"amount": "0.50"},
                {"amount": "100001"},
                {"amount": "1.001"},
                {"amount": "10", "currency": "EUR"},
                {"amount": "10", "provider": "wechat"},
            ]
            for body in bad:
                response = http.post(
                    "/api/payments/orders",
                    json={"bucket": "credit", "provider": "sandbox", **body},
                )
                assert response.status_code == 400, (body, response.text)
        assert entries_with_key(live, "topup:") == []

    def test_options_list_rates_limits_presets_and_providers(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            options = http.get("/api/payments/options").json()
        assert options["test_mode"] is True
        assert options["providers"] == ["sandbox", "stripe", "bank"]
        credit = next(b for b in options["buckets"] if b["bucket"] == "credit")
        assert credit["rates"]["JPY"] == "0.0067"
        assert options["presets"] == ["5", "10", "20", "50", "100"]


class TestConversion:
    @pytest.mark.parametrize(
        ("currency", "amount", "minor", "credited"),
        [
            ("JPY", "1500", 1500, 10_050_000_000),  # 1500 × 10^9 × 0.0067
            ("USD", "10.99", 1099, 10_990_000_000),
            ("KWD", "1.234", 1234, 4_010_500_000),  # 1234 × 10^6 × 3.25
        ],
    )
    def test_credited_is_floor_of_minor_times_scale_times_rate(
        self, live: LiveServer, currency: str, amount: str, minor: int, credited: int
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http, amount=amount, currency=currency)
            assert (order["amount_minor"], order["quoted_nanos"]) == (minor, credited)
            assert sandbox(http, order["id"], "pay").status_code == 200
            paid = get_order(http, order["id"])
        assert paid["credited_nanos"] == credited
        assert balance(live, user.id).balance_nanos == credited
        assert_reconciled(live)

    def test_a_rate_that_does_not_divide_evenly_is_floored_to_the_nano(
        self, start: ServerFactory
    ) -> None:
        """1 USD = 1/3 CNY as an exact decimal with more places than a nano: 10.01 USD →
        1001 × 10^7 × 0.333333333333 = 3_336_666_666.66… → 3_336_666_666 nanos, never rounded up."""
        live = start(topup_rates={"routed": {"USD": "0.333333333333"}})
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http, bucket="routed", amount="10.01", currency="USD")
            assert order["quoted_nanos"] == 3_336_666_666
            sandbox(http, order["id"], "pay")
        assert balance(live, user.id, "routed").balance_nanos == 3_336_666_666
        assert_reconciled(live)

    def test_partial_refunds_that_add_up_to_the_payment_take_back_exactly_the_credit(
        self, start: ServerFactory
    ) -> None:
        """Each refund converts with the order's factor, floored; the one that completes the
        refund takes the rest, so 5.00 + 5.01 of 10.01 USD leaves the bucket at exactly 0
        (floors alone would take 1_666_666_666 + 1_669_999_999 and leave 1 nano)."""
        live = start(topup_rates={"routed": {"USD": "0.333333333333"}})
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http, bucket="routed", amount="10.01", currency="USD")
            sandbox(http, order["id"], "pay")
        with as_user(live, live.make.operator()) as admin:
            taken = [
                admin.post(
                    f"/admin/api/payments/orders/{order['id']}/refunds",
                    json={"amount": amount, "reason": "returned", "mode": "manual"},
                ).json()["refunded_nanos"]
                for amount in ("5.00", "5.01")
            ]
        assert taken == [1_666_666_666, 1_670_000_000]
        assert sum(taken) == 3_336_666_666  # what the order credited
        b = balance(live, user.id, "routed")
        assert (b.balance_nanos, b.debt_nanos) == (0, 0)
        assert_reconciled(live)

    def test_routed_bucket_at_an_exchange_rate(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http, bucket="routed", amount="3.33", currency="USD")
            sandbox(http, order["id"], "pay")
        assert balance(live, user.id, "routed").balance_nanos == 333 * 72_000_000  # 23.976 CNY


class TestSandboxWalk:
    def test_pay_credits_once_with_one_entry_and_one_lot(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            for _ in range(3):
                assert sandbox(http, order["id"], "pay").json()["status"] == "paid"
            paid = get_order(http, order["id"])
        assert paid["status"] == "paid" and paid["credited_nanos"] == 10 * UNIT
        assert paid["actions"] == [] and paid["checkout_url"] is None
        assert paid["entry"]["idempotency_key"] == f"topup:sandbox:sbx_pay_{order['id']}"
        assert paid["usage"]["original_nanos"] == 10 * UNIT and paid["usage"]["used_nanos"] == 0
        assert statuses(paid) == ["pending", "paid"]
        assert [h["source"] for h in paid["history"]] == ["user", "sandbox"]
        assert len(entries_with_key(live, "topup:")) == 1
        assert balance(live, user.id).balance_nanos == 10 * UNIT
        assert_reconciled(live)

    def test_processing_then_paid(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            assert sandbox(http, order["id"], "processing").json()["status"] == "processing"
            assert balance(live, user.id).balance_nanos == 0
            assert sandbox(http, order["id"], "pay").json()["status"] == "paid"
            assert statuses(get_order(http, order["id"])) == ["pending", "processing", "paid"]
        assert balance(live, user.id).balance_nanos == 10 * UNIT

    def test_processing_then_failed_creates_no_balance(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            assert sandbox(http, order["id"], "processing").json()["status"] == "processing"
            processing = get_order(http, order["id"])
            assert processing["actions"] == [] and processing["checkout_url"] is None
            assert sandbox(http, order["id"], "fail").json()["status"] == "failed"
            failed = get_order(http, order["id"])
            state = http.get(f"/api/payments/orders/{order['id']}/state").json()
        assert statuses(failed) == ["pending", "processing", "failed"]
        assert failed["actions"] == [] and state["phase"] == "failed"
        assert balance(live, user.id).balance_nanos == 0
        assert entries_with_key(live, "topup:") == []

    @pytest.mark.parametrize(("action", "status"), [("fail", "failed"), ("cancel", "canceled")])
    def test_failed_and_canceled_orders_create_no_balance(
        self, live: LiveServer, action: str, status: str
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            assert sandbox(http, order["id"], action).json()["status"] == status
            closed = get_order(http, order["id"])
            again = sandbox(http, order["id"], "processing")
        assert closed["actions"] == [] and closed["checkout_url"] is None
        assert again.status_code == 409
        assert balance(live, user.id).balance_nanos == 0
        assert entries_with_key(live, "topup:") == []

    def test_leave_pending_changes_nothing(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            order = create_order(http)
            assert sandbox(http, order["id"], "pending").json()["status"] == "pending"
            assert statuses(get_order(http, order["id"])) == ["pending"]

    def test_user_cancel_endpoint(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            order = create_order(http)
            assert http.post(f"/api/payments/orders/{order['id']}/cancel").json()["status"] == (
                "canceled"
            )
            again = http.post(f"/api/payments/orders/{order['id']}/cancel")  # idempotent
            assert again.status_code == 200 and again.json()["status"] == "canceled"
            assert len(again.json()["history"]) == 2
            sandbox(http, order["id"], "processing")
            assert get_order(http, order["id"])["status"] == "canceled"

    def test_the_checkout_page_is_test_mode_and_its_forms_redirect(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            page = http.get(f"/sandbox/checkout/{order['id']}")
            assert page.status_code == 200 and "TEST MODE" in page.text
            for action in ("pay", "processing", "fail", "cancel", "pending"):
                assert f"/sandbox/checkout/{order['id']}/{action}" in page.text
            posted = http.post(f"/sandbox/checkout/{order['id']}/pay", data={"action": "pay"})
            assert posted.status_code == 303
            assert posted.headers["location"] == f"/?order={order['id']}"
            returned = http.get(f"/payments/return/{order['id']}")
            assert returned.status_code == 303
            assert returned.headers["location"] == f"/?order={order['id']}"
            closed = http.get(f"/sandbox/checkout/{order['id']}")
            assert "nothing to pay" in closed.text

    def test_orders_are_private(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            order = create_order(http)
        with as_user(live, live.make.user()) as other:
            assert other.get(f"/api/payments/orders/{order['id']}").status_code == 404
            assert other.get("/api/payments/orders").json()["items"] == []


class TestMismatch:
    @pytest.mark.parametrize(("amount", "currency"), [("9.00", "USD"), ("10.00", "EUR")])
    def test_a_disagreeing_payment_credits_nothing_and_flags_both_figures(
        self, live: LiveServer, amount: str, currency: str
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            sandbox(http, order["id"], "pay", amount=amount, currency=currency)
            flagged = get_order(http, order["id"])
        assert flagged["status"] == "pending" and flagged["flag"] == "amount_mismatch"
        assert '"expected":"10.00 USD"' in flagged["flag_detail"]
        assert f'"reported":"{amount} {currency}"' in flagged["flag_detail"]
        assert balance(live, user.id).balance_nanos == 0
        assert entries_with_key(live, "topup:") == []

    def test_a_flagged_order_waits_for_review_and_never_asks_to_pay_again(
        self, live: LiveServer
    ) -> None:
        """The money was taken: no pay or cancel action, the post-payment state says review
        (not "confirming", not "nothing was charged"), and the sweeper does not expire it."""
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            sandbox(http, order["id"], "pay", amount="9.00")
            flagged = get_order(http, order["id"])
            state = http.get(f"/api/payments/orders/{order['id']}/state").json()
            canceled = http.post(f"/api/payments/orders/{order['id']}/cancel")
            live.clock.advance(45 * 60)
            time.sleep(0.3)  # several sweeper passes (every 0.05 s)
            later = get_order(http, order["id"])
        assert flagged["actions"] == [] and flagged["checkout_url"] is None
        assert state["phase"] == "review" and "do not pay again" in state["message"]
        assert canceled.status_code == 409
        assert later["status"] == "pending" and later["flag"] == "amount_mismatch"
        assert statuses(later) == ["pending", "pending"]  # created, then flagged
        assert balance(live, user.id).balance_nanos == 0

    def test_an_operator_can_override_with_a_reason(self, live: LiveServer) -> None:
        user, op = live.make.user(), live.make.operator()
        with as_user(live, user) as http:
            order = create_order(http)
            sandbox(http, order["id"], "pay", amount="9.00")
        with as_user(live, op) as admin:
            assert (
                admin.post(
                    f"/admin/api/payments/orders/{order['id']}/override", json={"reason": ""}
                ).status_code
                == 422
            )
            done = admin.post(
                f"/admin/api/payments/orders/{order['id']}/override",
                json={"reason": "customer paid 9, confirmed by mail"},
            )
        assert done.status_code == 200, done.text
        assert done.json()["credited_nanos"] == 9 * UNIT
        assert balance(live, user.id).balance_nanos == 9 * UNIT
        assert_reconciled(live)


class TestExpiry:
    def test_the_sweeper_expires_pending_orders_by_the_clock(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            live.clock.advance(29 * 60)
            time.sleep(0.2)
            assert get_order(http, order["id"])["status"] == "pending"
            live.clock.advance(61)
            expired = wait_for(http, order["id"], "expired")
        assert expired["status"] == "expired" and expired["actions"] == []
        assert expired["history"][-1]["source"] == "sweeper"
        assert balance(live, user.id).balance_nanos == 0

    def test_a_payment_after_expiry_is_credited_and_the_order_says_so(
        self, live: LiveServer
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            live.clock.advance(31 * 60)
            wait_for(http, order["id"], "expired")
            sandbox(http, order["id"], "pay")  # the sandbox refuses nothing a provider would
            paid = get_order(http, order["id"])
        assert paid["status"] == "paid" and paid["paid_after_expiry"] is True
        assert statuses(paid) == ["pending", "expired", "paid"]
        assert "after the order was expired" in paid["history"][-1]["detail"]
        assert balance(live, user.id).balance_nanos == 10 * UNIT
        assert_reconciled(live)

    def test_processing_outlives_the_window(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            order = create_order(http)
            sandbox(http, order["id"], "processing")
            live.clock.advance(45 * 60)
            time.sleep(0.3)
            assert get_order(http, order["id"])["status"] == "processing"
            assert sandbox(http, order["id"], "pay").json()["status"] == "paid"


class TestPostPaymentState:
    def test_confirming_then_ready_with_everything_the_user_needs(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            waiting = http.get(f"/api/payments/orders/{order['id']}/state").json()
            assert waiting["phase"] == "confirming" and waiting["arrived"] is None
            assert waiting["receipt_url"] is None
            sandbox(http, order["id"], "pay")
            state = http.get(f"/api/payments/orders/{order['id']}/state").json()
            receipt = http.get(state["receipt_url"]).json()
            printable = http.get(f"/payments/orders/{order['id']}/receipt")
        assert state["phase"] == "ready" and state["ready_to_use"] is True
        assert (state["bucket"], state["bucket_label"], state["route_type"]) == (
            "credit",
            "Credit",
            "official",
        )
        assert state["arrived_nanos"] == 10 * UNIT and state["balance"] == "10.00"
        assert state["entry"]["kind"] == "topup" and state["test_mode"] is True
        assert state["charge_policy_url"]
        assert [s["href"] for s in state["next_steps"]][:2] == ["/api/keys", "/v1/chat/completions"]
        assert receipt["credited"] == "10.00" and receipt["paid"] == "10.00"
        assert receipt["entry"]["entry_id"] == state["entry"]["entry_id"]
        assert printable.status_code == 200 and "TEST MODE" in printable.text

    def test_which_receipts_used_the_top_up_is_exact(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            order = create_order(http)
            sandbox(http, order["id"], "pay")
            for n, amount in enumerate((3 * UNIT, 2 * UNIT)):
                with live.db.begin() as conn:
                    live.ledger.debit(
                        live.ledger.tx(conn),
                        user_id=user.id,
                        bucket="credit",
                        amount_nanos=amount,
                        kind="usage",
                        destination="revenue:usage",
                        idempotency_key=f"usage:req_{n}",
                        cause_type="request",
                        cause_id=f"req_{n}",
                    )
            usage = get_order(http, order["id"])["usage"]
        assert usage["used_nanos"] == 5 * UNIT and usage["remaining_nanos"] == 5 * UNIT
        assert usage["receipts"] == ["req_0", "req_1"]
