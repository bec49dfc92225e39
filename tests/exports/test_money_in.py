"""The top-up, refund and redemption exports against a scenario of real orders, refunds,
disputes and code claims made through the product's own surfaces (sandbox checkout, Stripe
webhooks from the loopback fake, operator refunds under both shortfall policies, redeem codes):

- alice pays 10 USD, spends 4, gets 3 USD refunded (partial, covered); one order fails, one
  stays pending; she claims a routed code, spends part of it and lets the rest expire;
- bob pays 10 USD through Stripe, spends 6, loses a dispute (debt 6), then claims a code that
  only repays debt;
- carol pays 20 CNY, spends 15, gets all 20 refunded under the debt policy (debt 15), then
  pays 5 USD at 7.2 with a 10 % bonus: 39.6 CNY, of which 15 repay the debt;
- dave pays 10 USD, spends 8, gets it all refunded under the review policy: 2 taken, 8 left
  awaiting a decision, which an operator books as debt.

Every expected value is written from those amounts; the sums are checked against the
reconciliation statement to the nano-unit."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tests.exports.conftest import parse_csv, parse_jsonl
from tests.exports.helpers import check_csv_cell, check_json_value, doc_columns, iso_to_us
from tests.fixtures.factories import Factory
from tests.fixtures.payments import WEBHOOK_SECRET, FakeStripe, fake_stripe_server, sign_stripe
from tests.fixtures.server import AppFactory, LiveServer, serving

from tallygate.db.engine import Database
from tallygate.exports.formats import iso
from tallygate.kit.clock import FrozenClock, to_epoch_us
from tallygate.ledger import Ledger
from tallygate.users.service import User

UNIT = 1_000_000_000
SECOND = 1_000_000
CUR = {"credit": "USD", "routed": "CNY"}
FORMULA = '=HYPERLINK("http://x","refund")'


def settings(fake: FakeStripe, **overrides: object) -> dict[str, object]:
    return {
        "payments_sandbox": True,
        "stripe_secret_key": "sk_test_fake",
        "stripe_api_base": fake.url,
        "stripe_webhook_secrets": [WEBHOOK_SECRET],
        "topup_rates": {"credit": {"USD": "1"}, "routed": {"CNY": "1", "USD": "7.2"}},
        "topup_bonus_tiers": {"routed": [("30", "0.1")]},
        "topup_max": "100000",
        **overrides,
    }


@dataclass
class Scenario:
    live: LiveServer
    review: LiveServer
    fake: FakeStripe
    operator: User
    users: dict[str, User]
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per order name: the expected export row (typed: nanos, µs), by column."""
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    redemptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    tokens: dict[int, str] = field(default_factory=dict)

    def http(self, user: User, server: LiveServer | None = None) -> httpx.Client:
        server = server or self.live
        if user.id not in self.tokens:
            self.tokens[user.id] = server.make.session_token(user, ttl_seconds=10**7)
        return server.client(headers={"Authorization": f"Bearer {self.tokens[user.id]}"})

    def now(self) -> int:
        return to_epoch_us(self.live.clock.now())

    def tick(self) -> int:
        self.live.clock.advance(1)
        return self.now()

    def export(self, name: str, user: User, fmt: str, admin: bool = False, **params: Any) -> bytes:
        path = f"/admin/api/exports/{name}" if admin else f"/api/exports/{name}"
        with self.http(user) as http:
            response = http.get(path, params={"format": fmt, **params})
        assert response.status_code == 200, response.text
        return response.content

    def statement(self, user: User, bucket: str, **params: Any) -> dict[str, Any]:
        with self.http(user) as http:
            response = http.get("/api/exports/statement", params={"bucket": bucket, **params})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def scenario(
    make_app: AppFactory, db: Database, ledger: Ledger, clock: FrozenClock
) -> Iterator[Scenario]:
    with ExitStack() as stack:
        fake = stack.enter_context(fake_stripe_server())
        servers = []
        for policy in ("debt", "review"):
            app = make_app(**settings(fake, refund_shortfall_policy=policy))
            base_url = stack.enter_context(serving(app))
            servers.append(LiveServer(app, base_url, db, ledger, clock, Factory(db, ledger)))
        make = servers[0].make
        people = {
            name: make.user(email=f"{name}@example.com")
            for name in ("alice", "bob", "carol", "dave", "frank", "gina")
        }
        s = Scenario(servers[0], servers[1], fake, make.operator(email="ops@example.com"), people)
        _play(s)
        yield s


# ---- the scenario -----------------------------------------------------------------------------


def _spend(s: Scenario, user: User, bucket: str, amount: int, request_id: str) -> None:
    with s.live.db.begin() as conn:
        s.live.ledger.debit(
            s.live.ledger.tx(conn),
            user_id=user.id,
            bucket=bucket,
            amount_nanos=amount,
            kind="usage",
            destination="revenue:usage",
            idempotency_key=f"usage:{request_id}",
            cause_type="request",
            cause_id=request_id,
        )


def _order(s: Scenario, user: User, bucket: str, amount: str, **body: Any) -> dict[str, Any]:
    with s.http(user) as http:
        response = http.post(
            "/api/payments/orders",
            json={"bucket": bucket, "amount": amount, "provider": "sandbox", **body},
        )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _sandbox(s: Scenario, order_id: str, action: str, server: LiveServer | None = None) -> None:
    with (server or s.live).client() as http:
        response = http.post(
            f"/sandbox/checkout/{order_id}/{action}", headers={"Accept": "application/json"}
        )
    assert response.status_code < 400, response.text


def _refund(
    s: Scenario,
    order_id: str,
    key: str,
    amount: str | None = None,
    server: Any = None,
    reason: str | None = None,
) -> dict[str, Any]:
    reason = reason or f"customer asked ({key})"
    body: dict[str, Any] = {"reason": reason, "idempotency_key": key}
    if amount is not None:
        body["amount"] = amount
    with s.http(s.operator, server) as http:
        response = http.post(f"/admin/api/payments/orders/{order_id}/refunds", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _deliver(s: Scenario, payload: bytes) -> None:
    t = int(s.live.clock.now().timestamp())
    with s.live.client() as http:
        response = http.post(
            "/api/payments/webhooks/stripe",
            content=payload,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_stripe(payload, t=t),
            },
        )
    assert response.status_code == 200, response.text


def _until(s: Scenario, user: User, order_id: str, done: Callable[[Any], bool]) -> None:
    """Webhooks are processed by the job worker after the 2xx: wait for the order to move."""
    deadline = time.monotonic() + 30
    with s.http(user) as http:
        while True:
            order = http.get(f"/api/payments/orders/{order_id}").json()
            if done(order):
                return
            assert time.monotonic() < deadline, order
            time.sleep(0.05)


def _claim(s: Scenario, user: User, code: str) -> dict[str, Any]:
    with s.http(user) as http:
        response = http.post("/api/credits/redeem", json={"code": code})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _campaign(s: Scenario, name: str, bucket: str, amount: str, **extra: Any) -> str:
    with s.http(s.operator) as http:
        made = http.post(
            "/admin/api/credits/campaigns",
            json={"name": name, "bucket": bucket, "amount": amount, **extra},
        )
        assert made.status_code == 201, made.text
        codes = http.post(
            f"/admin/api/credits/campaigns/{made.json()['id']}/codes", json={"prefix": "EXP"}
        )
        assert codes.status_code == 201, codes.text
    code = str(codes.json()["codes"][0]["code"])
    s.codes.append(code)
    return code


def _order_row(s: Scenario, name: str, user: User, order: dict[str, Any], **values: Any) -> None:
    bucket = order["bucket"]
    row = {
        "order_id": order["id"],
        "created_at": values.pop("created_at"),
        "expires_at": iso_to_us(order["expires_at"]),  # the lifetime the order was given
        "user_id": user.id,
        "user_email": user.email,
        "bucket": bucket,
        "bucket_currency": CUR[bucket],
        "provider": "sandbox",
        "test_mode": True,
        "provider_reference": order["id"],
        "provider_payment_id": None,
        "transfer_reference": None,
        "currency": "USD",
        "paid_amount": None,
        "paid_currency": None,
        "rate": "1",
        "bonus_rate": "0",
        "credited": None,
        "debt_repaid": None,
        "balance_credited": None,
        "paid_at": None,
        "paid_after_expiry": False,
        "flag": None,
        "flag_detail": None,
        "refund_state": "none",
        "refunded_amount": "0.00",
        "dispute_state": "none",
        "entry_id": None,
        "lot_id": None,
        "lot_original": None,
        "lot_used": None,
        "lot_taken_back": None,
        "lot_remaining": None,
        "balance_after": None,
    }
    row.update(values)
    if row["provider"] == "sandbox" and row["credited"] is not None:
        row["provider_payment_id"] = f"sbx_pay_{order['id']}"  # the sandbox's payment id
    if row["credited"] is not None:  # ids the scenario cannot know: checked against the ledger
        del row["entry_id"], row["lot_id"]
    s.orders[name] = row


def _play(s: Scenario) -> None:
    alice, bob, carol, dave = (s.users[n] for n in ("alice", "bob", "carol", "dave"))

    # alice claims a routed code (expires in an hour), spends 1.5 of it, the rest expires.
    code = _campaign(s, "Spring routed", "routed", "5", credit_ttl_seconds=3600)
    s.tick()
    claimed_at = s.now()
    claimed = _claim(s, alice, code)
    _spend(s, alice, "routed", 1_500_000_000, "req_alice_promo")
    s.live.clock.advance(3601)
    with s.live.db.begin() as conn:
        s.live.ledger.expire_lots(s.live.ledger.tx(conn))
    s.redemptions["alice"] = {
        "redemption_id": claimed["id"],
        "created_at": claimed_at,
        "campaign": "Spring routed",
        "code_prefix": code.rsplit("-", 3)[0],
        "user_id": alice.id,
        "email": alice.email,
        "bucket": "routed",
        "currency": "CNY",
        "amount": 5 * UNIT,
        "lot_expires_at": claimed_at + 3600 * SECOND,
        "remaining": 0,
        "kind": "code",
        "debt_repaid": 0,
        "balance_credited": 5 * UNIT,
        "lot_original": 5 * UNIT,
        "lot_spent": 1_500_000_000,
        "lot_expired": 3_500_000_000,
        "client_address": "127.0.0.1",
    }

    # alice: 10 USD paid, 4 spent, 3 USD refunded (covered by the balance).
    created = s.tick()
    o1 = _order(s, alice, "credit", "10.00")
    paid = s.tick()
    _sandbox(s, o1["id"], "pay")
    _spend(s, alice, "credit", 4 * UNIT, "req_alice_1")
    refunded_at = s.tick()
    r1 = _refund(s, o1["id"], "alice-partial", "3.00")
    _order_row(
        s,
        "alice_paid",
        alice,
        o1,
        created_at=created,
        paid_at=paid,
        amount="10.00",
        paid_amount="10.00",
        paid_currency="USD",
        quoted=10 * UNIT,
        credited=10 * UNIT,
        debt_repaid=0,
        balance_credited=10 * UNIT,
        balance_after=10 * UNIT,
        status="paid",
        status_reason="paid 10.00 USD; credited 10.00 USD",
        state_history="pending (user) > paid (sandbox)",
        history_events=4,  # created, paid, refund in flight, booked
        refund_state="partial",
        refunded_amount="3.00",
        lot_original=10 * UNIT,
        lot_used=4 * UNIT,
        lot_taken_back=3 * UNIT,
        lot_remaining=3 * UNIT,
        updated_at=refunded_at,
    )
    s.refunds["alice"] = {
        "refund_id": r1["id"],
        "order_id": o1["id"],
        "user_id": alice.id,
        "user_email": alice.email,
        "bucket": "credit",
        "bucket_currency": "USD",
        "provider": "sandbox",
        "provider_reference": f"sbx_pay_{o1['id']}",
        "provider_refund_id": "sbx_re_"
        + hashlib.sha256(b"refund:sandbox:op:alice-partial").hexdigest()[:20],
        "source": "admin",
        "actor": s.operator.email,
        "reason": "customer asked (alice-partial)",
        "shortfall_policy": "",
        "status": "succeeded",
        "amount": "3.00",
        "currency": "USD",
        "amount_converted": 3 * UNIT,
        "held": 3 * UNIT,  # held while the provider confirmed it, then taken
        "order_credited": 10 * UNIT,
        "credit_used": 4 * UNIT,
        "credit_already_used": True,
        "taken": 3 * UNIT,
        "debt": 0,
        "shortfall": 0,
        "shortfall_state": "none",
        "decision_reason": "",
        "balance_debited": 3 * UNIT,
        "debt_booked": 0,
        "recredited": 0,
        "written_off": 0,
        "balance_after": 3 * UNIT,
        "shortfall_entry_id": None,
        "recredit_entry_id": None,
        "receipts": ["req_alice_1"],
        "idempotency_key": "refund:sandbox:op:alice-partial",
        "duplicates_suppressed": 0,
        "first_seen_at": refunded_at,
        "booked_at": refunded_at,
        "updated_at": refunded_at,
    }
    # alice: one order fails, one is left pending.
    created = s.tick()
    o2 = _order(s, alice, "credit", "7.00")
    failed_at = s.tick()
    _sandbox(s, o2["id"], "fail")
    _order_row(
        s,
        "alice_failed",
        alice,
        o2,
        created_at=created,
        amount="7.00",
        quoted=7 * UNIT,
        status="failed",
        status_reason="sandbox: fail",
        state_history="pending (user) > failed (sandbox)",
        history_events=2,
        updated_at=failed_at,
    )
    created = s.tick()
    o3 = _order(s, alice, "credit", "2.50")
    _order_row(
        s,
        "alice_pending",
        alice,
        o3,
        created_at=created,
        amount="2.50",
        quoted=2_500_000_000,
        status="pending",
        status_reason="",
        state_history="pending (user)",
        history_events=1,
        updated_at=created,
    )

    # bob: 10 USD through Stripe, 6 spent, the dispute is lost: 4 taken back, 6 becomes debt.
    created = s.tick()
    o4 = _order(s, bob, "credit", "10.00", provider="stripe")
    sid = o4["provider_reference"]
    s.fake.complete(sid)
    paid = s.tick()
    _deliver(s, s.fake.event("checkout.session.completed", s.fake.sessions[sid]))
    _until(s, bob, o4["id"], lambda o: o["status"] == "paid")
    _spend(s, bob, "credit", 6 * UNIT, "req_bob_1")
    dispute = s.fake.dispute(sid)
    s.fake.withdraw(dispute["id"])
    disputed_at = s.tick()
    _deliver(s, s.fake.event("charge.dispute.closed", s.fake.close(dispute["id"], won=False)))
    _until(s, bob, o4["id"], lambda o: o["dispute_state"] == "lost")
    _order_row(
        s,
        "bob_disputed",
        bob,
        o4,
        created_at=created,
        paid_at=paid,
        provider="stripe",
        test_mode=False,
        provider_reference=sid,
        provider_payment_id=s.fake.sessions[sid]["payment_intent"],
        amount="10.00",
        paid_amount="10.00",
        paid_currency="USD",
        quoted=10 * UNIT,
        credited=10 * UNIT,
        debt_repaid=0,
        balance_credited=10 * UNIT,
        balance_after=10 * UNIT,
        status="paid",
        status_reason="paid 10.00 USD; credited 10.00 USD",
        state_history="pending (user) > paid (webhook)",
        history_events=4,
        dispute_state="lost",
        flag="disputed",
        flag_detail=f'{{"dispute":"{dispute["id"]}"}}',
        lot_original=10 * UNIT,
        lot_used=6 * UNIT,
        lot_taken_back=4 * UNIT,
        lot_remaining=0,
        updated_at=disputed_at,
    )
    # bob claims 5 USD of credit: all of it repays debt (no lot).
    code = _campaign(s, "Goodwill", "credit", "5")
    claimed_at = s.tick()
    claimed = _claim(s, bob, code)
    s.redemptions["bob"] = {
        "redemption_id": claimed["id"],
        "created_at": claimed_at,
        "campaign": "Goodwill",
        "code_prefix": code.rsplit("-", 3)[0],
        "user_id": bob.id,
        "email": bob.email,
        "bucket": "credit",
        "currency": "USD",
        "amount": 5 * UNIT,
        "lot_id": None,
        "lot_expires_at": None,
        "remaining": 0,
        "kind": "code",
        "debt_repaid": 5 * UNIT,
        "balance_credited": 0,
        "lot_original": None,
        "lot_spent": None,
        "lot_expired": None,
        "client_address": "127.0.0.1",
    }

    # carol: 20 CNY, 15 spent, all refunded under the debt policy; then 5 USD at 7.2 + 10 %.
    created = s.tick()
    o5 = _order(s, carol, "routed", "20.00", currency="CNY")
    paid = s.tick()
    _sandbox(s, o5["id"], "pay")
    _spend(s, carol, "routed", 15 * UNIT, "req_carol_1")
    refunded_at = s.tick()
    r5 = _refund(s, o5["id"], "carol-full")
    _order_row(
        s,
        "carol_refunded",
        carol,
        o5,
        created_at=created,
        paid_at=paid,
        currency="CNY",
        amount="20.00",
        paid_amount="20.00",
        paid_currency="CNY",
        quoted=20 * UNIT,
        credited=20 * UNIT,
        debt_repaid=0,
        balance_credited=20 * UNIT,
        balance_after=20 * UNIT,
        status="paid",
        status_reason="paid 20.00 CNY; credited 20.00 CNY",
        state_history="pending (user) > paid (sandbox)",
        history_events=4,  # created, paid, refund in flight, booked
        refund_state="full",
        refunded_amount="20.00",
        lot_original=20 * UNIT,
        lot_used=15 * UNIT,
        lot_taken_back=5 * UNIT,
        lot_remaining=0,
        updated_at=refunded_at,
    )
    s.refunds["carol"] = {
        **s.refunds["alice"],
        "refund_id": r5["id"],
        "order_id": o5["id"],
        "user_id": carol.id,
        "user_email": carol.email,
        "bucket": "routed",
        "bucket_currency": "CNY",
        "provider_reference": f"sbx_pay_{o5['id']}",
        "provider_refund_id": "sbx_re_"
        + hashlib.sha256(b"refund:sandbox:op:carol-full").hexdigest()[:20],
        "reason": "customer asked (carol-full)",
        "shortfall_policy": "debt",
        "amount": "20.00",
        "currency": "CNY",
        "amount_converted": 20 * UNIT,
        "held": 5 * UNIT,  # all that was available
        "order_credited": 20 * UNIT,
        "credit_used": 15 * UNIT,
        "taken": 5 * UNIT,
        "debt": 15 * UNIT,
        "shortfall": 15 * UNIT,
        "shortfall_state": "debt",
        "balance_debited": 5 * UNIT,
        "debt_booked": 15 * UNIT,
        "balance_after": 0,
        "receipts": ["req_carol_1"],
        "idempotency_key": "refund:sandbox:op:carol-full",
        "first_seen_at": refunded_at,
        "booked_at": refunded_at,
        "updated_at": refunded_at,
    }
    created = s.tick()
    o6 = _order(s, carol, "routed", "5.00", currency="USD")
    paid = s.tick()
    _sandbox(s, o6["id"], "pay")
    credited = 39_600_000_000  # 5 × 7.2 × 1.1
    _order_row(
        s,
        "carol_repays",
        carol,
        o6,
        created_at=created,
        paid_at=paid,
        amount="5.00",
        paid_amount="5.00",
        paid_currency="USD",
        rate="7.2",
        bonus_rate="0.1",
        quoted=credited,
        credited=credited,
        debt_repaid=15 * UNIT,
        balance_credited=credited - 15 * UNIT,
        balance_after=credited - 15 * UNIT,
        status="paid",
        status_reason="paid 5.00 USD; credited 39.60 CNY (repaid debt 15.00)",
        state_history="pending (user) > paid (sandbox)",
        history_events=2,
        lot_original=credited - 15 * UNIT,
        lot_used=0,
        lot_taken_back=0,
        lot_remaining=credited - 15 * UNIT,
        updated_at=paid,
    )

    # dave: 10 USD, 8 spent, all refunded under the review policy; the operator books debt.
    created = s.tick()
    o7 = _order(s, dave, "credit", "10.00")
    paid = s.tick()
    _sandbox(s, o7["id"], "pay", s.review)
    _spend(s, dave, "credit", 8 * UNIT, "req_dave_1")
    refunded_at = s.tick()
    r7 = _refund(s, o7["id"], "dave-full", server=s.review)
    decided_at = s.tick()
    with s.http(s.operator, s.review) as http:
        decided = http.post(
            f"/admin/api/payments/refunds/{r7['id']}/decision",
            json={"decision": "debt", "reason": "customer will top up"},
        )
    assert decided.status_code == 200, decided.text
    _order_row(
        s,
        "dave_refunded",
        dave,
        o7,
        created_at=created,
        paid_at=paid,
        amount="10.00",
        paid_amount="10.00",
        paid_currency="USD",
        quoted=10 * UNIT,
        credited=10 * UNIT,
        debt_repaid=0,
        balance_credited=10 * UNIT,
        balance_after=10 * UNIT,
        status="paid",
        status_reason="paid 10.00 USD; credited 10.00 USD",
        state_history="pending (user) > paid (sandbox)",
        history_events=4,  # created, paid, refund in flight, booked
        refund_state="full",
        refunded_amount="10.00",
        lot_original=10 * UNIT,
        lot_used=8 * UNIT,
        lot_taken_back=2 * UNIT,
        lot_remaining=0,
        updated_at=refunded_at,
    )
    s.refunds["dave"] = {
        **s.refunds["alice"],
        "refund_id": r7["id"],
        "order_id": o7["id"],
        "user_id": dave.id,
        "user_email": dave.email,
        "provider_reference": f"sbx_pay_{o7['id']}",
        "provider_refund_id": "sbx_re_"
        + hashlib.sha256(b"refund:sandbox:op:dave-full").hexdigest()[:20],
        "reason": "customer asked (dave-full)",
        "shortfall_policy": "review",
        "amount": "10.00",
        "amount_converted": 10 * UNIT,
        "held": 2 * UNIT,
        "credit_used": 8 * UNIT,
        "taken": 2 * UNIT,
        "debt": 8 * UNIT,
        "shortfall": 8 * UNIT,
        "shortfall_state": "debt",
        "decision_reason": "customer will top up",
        "balance_debited": 2 * UNIT,
        "debt_booked": 8 * UNIT,
        "balance_after": 0,
        "receipts": ["req_dave_1"],
        "idempotency_key": "refund:sandbox:op:dave-full",
        "first_seen_at": refunded_at,
        "booked_at": refunded_at,
        "updated_at": decided_at,
    }

    _play_failed_and_written_off(s)

    # erin signs up while a starter campaign runs: a grant, no code.
    with s.http(s.operator) as http:
        made = http.post(
            "/admin/api/credits/campaigns",
            json={"name": "Welcome", "kind": "starter", "bucket": "credit", "amount": "1.25"},
        )
    assert made.status_code == 201, made.text
    granted_at = s.tick()
    erin = s.users["erin"] = s.live.make.user(email="erin@example.com")
    s.redemptions["erin"] = {
        "created_at": granted_at,
        "campaign": "Welcome",
        "code_prefix": "",
        "user_id": erin.id,
        "email": erin.email,
        "bucket": "credit",
        "currency": "USD",
        "amount": 1_250_000_000,
        "lot_expires_at": None,
        "remaining": 1_250_000_000,
        "kind": "starter",
        "debt_repaid": 0,
        "balance_credited": 1_250_000_000,
        "lot_original": 1_250_000_000,
        "lot_spent": 0,
        "lot_expired": 0,
        "client_address": None,
    }


def _play_failed_and_written_off(s: Scenario) -> None:
    frank, gina = s.users["frank"], s.users["gina"]
    paid_row = {
        "amount": "10.00",
        "paid_amount": "10.00",
        "paid_currency": "USD",
        "quoted": 10 * UNIT,
        "credited": 10 * UNIT,
        "debt_repaid": 0,
        "balance_credited": 10 * UNIT,
        "balance_after": 10 * UNIT,
        "status": "paid",
        "status_reason": "paid 10.00 USD; credited 10.00 USD",
    }
    # frank: 10 USD through Stripe; 4 USD refunded, then Stripe fails the refund: re-credited.
    created = s.tick()
    order = _order(s, frank, "credit", "10.00", provider="stripe")
    sid = order["provider_reference"]
    s.fake.complete(sid)
    paid = s.tick()
    _deliver(s, s.fake.event("checkout.session.completed", s.fake.sessions[sid]))
    _until(s, frank, order["id"], lambda o: o["status"] == "paid")
    refunded_at = s.tick()
    refund = _refund(s, order["id"], "frank-fails", "4.00")
    failed_at = s.tick()
    rid = refund["provider_refund_id"]
    _deliver(s, s.fake.event("charge.refund.updated", s.fake.set_refund_status(rid, "failed")))
    _until(s, frank, order["id"], lambda o: o["refunds"][0]["status"] == "failed")
    _order_row(
        s,
        "frank_refund_failed",
        frank,
        order,
        created_at=created,
        paid_at=paid,
        provider="stripe",
        test_mode=False,
        provider_reference=sid,
        provider_payment_id=s.fake.sessions[sid]["payment_intent"],
        **paid_row,
        state_history="pending (user) > paid (webhook)",
        history_events=5,  # created, paid, refund in flight, booked, failed and re-credited
        refund_state="none",
        refunded_amount="0.00",
        lot_original=10 * UNIT,
        lot_used=0,
        lot_taken_back=4 * UNIT,
        lot_remaining=6 * UNIT,  # the re-credit opened a lot of its own
        updated_at=failed_at,
    )
    s.refunds["frank"] = {
        **s.refunds["alice"],
        "refund_id": refund["id"],
        "order_id": order["id"],
        "user_id": frank.id,
        "user_email": frank.email,
        "provider": "stripe",
        "provider_reference": s.fake.sessions[sid]["payment_intent"],
        "provider_refund_id": rid,
        "reason": "customer asked (frank-fails)",
        "status": "failed",
        "amount": "4.00",
        "amount_converted": 4 * UNIT,
        "held": 4 * UNIT,
        "credit_used": 0,
        "credit_already_used": False,
        "taken": 4 * UNIT,
        "balance_debited": 4 * UNIT,
        "recredited": 4 * UNIT,
        "balance_after": 6 * UNIT,
        "receipts": [],
        "idempotency_key": "refund:stripe:op:frank-fails",
        "first_seen_at": refunded_at,
        "booked_at": refunded_at,
        "updated_at": failed_at,
    }
    del s.refunds["frank"]["recredit_entry_id"]  # an id: checked against the ledger

    # gina: 10 USD, 9 spent, all refunded under review; the operator writes the 9 off.
    created = s.tick()
    order = _order(s, gina, "credit", "10.00")
    paid = s.tick()
    _sandbox(s, order["id"], "pay", s.review)
    _spend(s, gina, "credit", 9 * UNIT, "req_gina_1")
    refunded_at = s.tick()
    refund = _refund(s, order["id"], "gina-full", server=s.review, reason=FORMULA)
    decided_at = s.tick()
    with s.http(s.operator, s.review) as http:
        decided = http.post(
            f"/admin/api/payments/refunds/{refund['id']}/decision",
            json={"decision": "write_off", "reason": "small amount"},
        )
    assert decided.status_code == 200, decided.text
    _order_row(
        s,
        "gina_written_off",
        gina,
        order,
        created_at=created,
        paid_at=paid,
        **paid_row,
        state_history="pending (user) > paid (sandbox)",
        history_events=4,
        refund_state="full",
        refunded_amount="10.00",
        lot_original=10 * UNIT,
        lot_used=9 * UNIT,
        lot_taken_back=1 * UNIT,
        lot_remaining=0,
        updated_at=refunded_at,
    )
    s.refunds["gina"] = {
        **s.refunds["alice"],
        "refund_id": refund["id"],
        "order_id": order["id"],
        "user_id": gina.id,
        "user_email": gina.email,
        "provider_reference": f"sbx_pay_{order['id']}",
        "provider_refund_id": "sbx_re_"
        + hashlib.sha256(b"refund:sandbox:op:gina-full").hexdigest()[:20],
        "reason": FORMULA,  # neutralised in CSV (check_csv_cell expects the apostrophe)
        "shortfall_policy": "review",
        "amount": "10.00",
        "amount_converted": 10 * UNIT,
        "held": 1 * UNIT,
        "credit_used": 9 * UNIT,
        "taken": 1 * UNIT,
        "debt": 9 * UNIT,
        "shortfall": 9 * UNIT,
        "shortfall_state": "written_off",
        "decision_reason": "small amount",
        "balance_debited": 1 * UNIT,
        "debt_booked": 9 * UNIT,
        "written_off": 9 * UNIT,
        "balance_after": 0,
        "receipts": ["req_gina_1"],
        "idempotency_key": "refund:sandbox:op:gina-full",
        "first_seen_at": refunded_at,
        "booked_at": refunded_at,
        "updated_at": decided_at,
    }
    del s.refunds["gina"]["shortfall_entry_id"]  # an id: checked against the ledger


# ---- checks -----------------------------------------------------------------------------------


def check_rows(
    name: str, csv_rows: list[dict[str, str]], jsonl: list[dict[str, Any]], expected: list[Any]
) -> None:
    """Every documented column of every row against the scenario (a column the scenario
    cannot know — entry and lot ids — is checked for presence and type only, and cross-checked
    against the ledger export by the callers)."""
    documented = doc_columns(name)
    assert len(csv_rows) == len(jsonl) == len(expected), name
    for csv_row, json_row, want in zip(csv_rows, jsonl, expected, strict=True):
        assert list(csv_row) == [c for c, _ in documented]
        for column, kind in documented:
            where = f"{name}[{want.get('order_id') or want.get('refund_id') or want['user_id']}]"
            where += f".{column}"
            if column in want:
                check_csv_cell(kind, csv_row[column], want[column], where)
                check_json_value(kind, json_row[column], want[column], where)
            else:
                assert kind == "int" and column.endswith(("_id", "entry_id")), where
                assert isinstance(json_row[column], int), where
                assert csv_row[column] == str(json_row[column]), where


def both(s: Scenario, name: str, user: User, admin: bool = False, **params: Any) -> Any:
    _, rows = parse_csv(s.export(name, user, "csv", admin=admin, **params))
    return rows, parse_jsonl(s.export(name, user, "jsonl", admin=admin, **params))


def ledger_entries(s: Scenario) -> dict[int, list[dict[str, Any]]]:
    rows = parse_jsonl(s.export("ledger", s.operator, "jsonl", admin=True))
    found: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["entry_id"], []).append(row)
    return found


ORDER_NAMES = [
    "alice_paid",
    "alice_failed",
    "alice_pending",
    "bob_disputed",
    "carol_refunded",
    "carol_repays",
    "dave_refunded",
    "frank_refund_failed",
    "gina_written_off",
]


def test_topup_export_every_column_for_paid_refunded_disputed_failed_and_pending_orders(
    scenario: Scenario,
) -> None:
    s = scenario
    csv_rows, jsonl = both(s, "topups", s.operator, admin=True)
    check_rows("topups", csv_rows, jsonl, [s.orders[n] for n in ORDER_NAMES])
    entries = ledger_entries(s)
    for row, name in zip(jsonl, ORDER_NAMES, strict=True):
        if s.orders[name]["credited"] is None:
            assert row["entry_id"] is None and row["lot_id"] is None
            continue
        # the row's entry is the ledger's top-up of this order, and its lot the one it opened
        (posting,) = [p for p in entries[row["entry_id"]] if p["account"] == "bucket"]
        assert (posting["kind"], posting["cause_id"]) == ("topup", row["order_id"])
        assert posting["amount"] == row["balance_credited"]
        assert posting["lot_id"] == row["lot_id"]
        # the JSON Lines form carries the whole history
        assert [e["to_status"] for e in row["history"]][:2] == ["pending", "paid"]
        assert len(row["history"]) == row["history_events"]
    # filters: status, provider (kind), bucket, user; a user sees only their own orders
    assert [r["order_id"] for r in parse_jsonl(s.export("topups", s.users["alice"], "jsonl"))] == [
        s.orders[n]["order_id"] for n in ORDER_NAMES[:3]
    ]
    failed = parse_jsonl(s.export("topups", s.operator, "jsonl", admin=True, status="failed"))
    assert [r["order_id"] for r in failed] == [s.orders["alice_failed"]["order_id"]]
    stripe = parse_jsonl(s.export("topups", s.operator, "jsonl", admin=True, kind="stripe"))
    assert [r["order_id"] for r in stripe] == [
        s.orders[n]["order_id"] for n in ("bob_disputed", "frank_refund_failed")
    ]
    routed = parse_jsonl(s.export("topups", s.users["carol"], "jsonl", bucket="routed"))
    assert [r["order_id"] for r in routed] == [
        s.orders["carol_refunded"]["order_id"],
        s.orders["carol_repays"]["order_id"],
    ]


def test_refund_export_every_column_partial_full_with_debt_and_reviewed_shortfall(
    scenario: Scenario,
) -> None:
    s = scenario
    names = ["alice", "carol", "dave", "frank", "gina"]
    csv_rows, jsonl = both(s, "refunds", s.operator, admin=True)
    check_rows("refunds", csv_rows, jsonl, [s.refunds[n] for n in names])
    entries = ledger_entries(s)
    for row in jsonl:
        kinds = {p["kind"] for p in entries[row["entry_id"]]}
        assert kinds == {"refund"}
        assert {p["cause_id"] for p in entries[row["entry_id"]]} == {row["refund_id"]}
    dave = jsonl[2]
    # dave's refund took the 2 held and booked the 8 the balance could not cover as debt
    caused = [p for rows in entries.values() for p in rows if p["cause_id"] == dave["refund_id"]]
    assert sorted((p["account"], p["amount"]) for p in caused) == [
        ("bucket", "-2.00"),
        ("debt", "8.00"),
    ]
    frank, gina = jsonl[3], jsonl[4]
    assert csv_rows[4]["reason"] == "'" + FORMULA and gina["reason"] == FORMULA
    assert [
        (p["kind"], p["account"], p["amount"]) for p in entries[frank["recredit_entry_id"]]
    ] == [("refund_failed", "bucket", "4.00")]
    assert [
        (p["kind"], p["account"], p["amount"]) for p in entries[gina["shortfall_entry_id"]]
    ] == [("refund_write_off", "debt", "-9.00")]
    for name in names:
        mine = parse_jsonl(s.export("refunds", s.users[name], "jsonl"))
        assert [r["refund_id"] for r in mine] == [s.refunds[name]["refund_id"]]
    assert parse_jsonl(s.export("refunds", s.users["bob"], "jsonl")) == []
    reviewed = parse_jsonl(s.export("refunds", s.operator, "jsonl", admin=True, bucket="routed"))
    assert [r["refund_id"] for r in reviewed] == [s.refunds["carol"]["refund_id"]]


def test_redemption_export_masks_codes_and_shows_what_the_lot_became(scenario: Scenario) -> None:
    s = scenario
    csv_raw = s.export("redemptions", s.operator, "csv", admin=True)
    jsonl_raw = s.export("redemptions", s.operator, "jsonl", admin=True)
    _, csv_rows = parse_csv(csv_raw)
    jsonl = parse_jsonl(jsonl_raw)
    check_rows("redemptions", csv_rows, jsonl, [s.redemptions[n] for n in ("alice", "bob", "erin")])
    for code in s.codes:
        secret = code.split("-", 2)[2]
        assert secret.encode() not in csv_raw and secret.encode() not in jsonl_raw
    entries = ledger_entries(s)
    alice, bob, erin = jsonl
    assert [(p["kind"], p["account"]) for p in entries[alice["entry_id"]]] == [("redeem", "bucket")]
    assert [(p["kind"], p["account"], p["amount"]) for p in entries[bob["entry_id"]]] == [
        ("redeem", "debt", "-5.00")
    ]
    assert entries[alice["entry_id"]][0]["lot_id"] == alice["lot_id"]
    mine = parse_jsonl(s.export("redemptions", s.users["bob"], "jsonl"))
    assert [r["redemption_id"] for r in mine] == [bob["redemption_id"]]
    assert parse_jsonl(s.export("redemptions", s.users["bob"], "jsonl", kind="starter")) == []
    starters = parse_jsonl(s.export("redemptions", s.operator, "jsonl", admin=True, kind="starter"))
    assert starters == [erin]
    assert parse_jsonl(s.export("redemptions", s.operator, "jsonl", admin=True, kind="x")) == []
    assert [(p["kind"], p["amount"]) for p in entries[erin["entry_id"]]] == [("grant", "1.25")]


def _line(statement: dict[str, Any], kind: str, debt: bool = False) -> int:
    moves = statement["debt"]["movements"] if debt else statement["movements"]
    return sum(int(m["nanos"]) for m in moves if m["kind"] == kind)


def _nanos(text: str | None) -> int:
    from decimal import Decimal

    return 0 if text is None else int(Decimal(text) * UNIT)


def test_sums_equal_the_statement_lines_to_the_nano_unit(scenario: Scenario) -> None:
    s = scenario
    for user in s.users.values():
        for bucket in ("credit", "routed"):
            statement = s.statement(user, bucket)
            assert statement["balanced"] is True
            topups = parse_jsonl(s.export("topups", user, "jsonl", bucket=bucket))
            refunds = parse_jsonl(s.export("refunds", user, "jsonl", bucket=bucket))
            codes = parse_jsonl(s.export("redemptions", user, "jsonl", bucket=bucket))
            assert sum(_nanos(r["balance_credited"]) for r in topups) == _line(statement, "topup")
            assert -sum(_nanos(r["debt_repaid"]) for r in topups) == _line(
                statement, "topup", debt=True
            )
            assert -sum(_nanos(r["balance_debited"]) for r in refunds) == _line(statement, "refund")
            assert sum(_nanos(r["debt_booked"]) for r in refunds) == _line(
                statement, "refund", debt=True
            )
            for column, kind in (
                ("recredited", "refund_failed"),
                ("written_off", "refund_write_off"),
            ):
                # balance credited plus debt repaid
                assert sum(_nanos(r[column]) for r in refunds) == _line(statement, kind) - _line(
                    statement, kind, debt=True
                )
            for kind, line in (("code", "redeem"), ("starter", "grant")):
                mine = [r for r in codes if r["kind"] == kind]
                assert sum(_nanos(r["balance_credited"]) for r in mine) == _line(statement, line)
                assert -sum(_nanos(r["debt_repaid"]) for r in mine) == _line(
                    statement, line, debt=True
                )
    # the scenario's own totals (carol's routed bucket): 20 + 24.6 in, 5 refunded, 15 repaid
    carol = s.statement(s.users["carol"], "routed")
    assert _line(carol, "topup") == 20 * UNIT + 24_600_000_000
    assert _line(carol, "refund") == -5 * UNIT
    assert _line(carol, "refund", debt=True) == 15 * UNIT
    assert _line(carol, "topup", debt=True) == -15 * UNIT


def test_a_period_boundary_on_a_credit_is_half_open(scenario: Scenario) -> None:
    s = scenario
    carol = s.users["carol"]
    boundary = s.orders["carol_repays"]["paid_at"]
    stamp = iso(boundary)
    before = parse_jsonl(s.export("topups", carol, "jsonl", until=stamp))
    after = parse_jsonl(s.export("topups", carol, "jsonl", since=stamp))
    assert [r["order_id"] for r in before] == [s.orders["carol_refunded"]["order_id"]]
    assert [r["order_id"] for r in after] == [s.orders["carol_repays"]["order_id"]]
    for window, rows in (({"until": stamp}, before), ({"since": stamp}, after)):
        statement = s.statement(carol, "routed", **window)
        assert sum(_nanos(r["balance_credited"]) for r in rows) == _line(statement, "topup")
