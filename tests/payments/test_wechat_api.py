"""WeChat Pay v3 end to end against a loopback fake at the HTTP edge, on both databases: the
Native order and the refund are real signed API calls (the fake checks the merchant's
signature, our client checks the platform's on every answer); the fake pays and settles and
delivers signed, sealed notices to our notify URL — twice, and out of order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from tallygate.models.payments import payment_jobs
from tests.fixtures.payments import WeChatKeys
from tests.fixtures.server import LiveServer
from tests.fixtures.wechat import FakeWeChat, fake_wechat_server
from tests.payments.conftest import ServerFactory
from tests.payments.helpers import (
    UNIT,
    as_user,
    assert_reconciled,
    balance,
    create_order,
    get_order,
    wait_for_jobs,
)


@pytest.fixture(scope="module")
def keys() -> WeChatKeys:
    return WeChatKeys.generate()


@pytest.fixture
def wechat_fake(keys: WeChatKeys) -> Iterator[FakeWeChat]:
    with fake_wechat_server(keys) as fake:
        yield fake


@pytest.fixture
def wlive(start: ServerFactory, keys: WeChatKeys, wechat_fake: FakeWeChat) -> LiveServer:
    return start(**keys.settings(), wechat_api_base=wechat_fake.url)


def deliver(live: LiveServer, fake: FakeWeChat, out_trade_no: str, notice: bytes) -> int:
    status = fake.deliver(out_trade_no, notice, t=int(live.clock.now().timestamp()))
    wait_for_jobs(live)
    return status


def new_order(live: LiveServer, user: Any) -> dict[str, Any]:
    with as_user(live, user) as http:
        return create_order(
            http, provider="wechat", bucket="routed", amount="68.00", currency="CNY"
        )


def refund(live: LiveServer, order_id: str, amount: str) -> Any:
    with as_user(live, live.make.operator()) as admin:
        return admin.post(
            f"/admin/api/payments/orders/{order_id}/refunds",
            json={"amount": amount, "reason": "customer asked"},
        )


def order_of(live: LiveServer, user: Any, order_id: str) -> dict[str, Any]:
    with as_user(live, user) as http:
        return get_order(http, order_id)


def entry_kinds(live: LiveServer) -> list[str]:
    with live.db.read() as conn:
        rows = live.ledger.tx(conn).all("SELECT kind FROM entries ORDER BY id")
    return [str(r[0]) for r in rows]


class TestNativeOrderAndRefund:
    def test_order_qr_paid_once_refund_held_then_debited_once(
        self, wlive: LiveServer, wechat_fake: FakeWeChat
    ) -> None:
        user = wlive.make.user()
        order = new_order(wlive, user)
        placed = wechat_fake.orders[order["id"]]
        # The QR code's content is the code_url the (verified) Native call returned.
        assert order["checkout_url"] == placed["code_url"]
        assert order["checkout_url"].startswith("weixin://wxpay/bizpayurl?pr=")
        assert placed["amount"] == {"total": 6800, "currency": "CNY"}
        assert placed["notify_url"] == f"{wlive.base_url}/api/payments/webhooks/wechat"
        assert wechat_fake.requests == [("POST", "/v3/pay/transactions/native", True)]

        paid = wechat_fake.pay(order["id"])
        assert deliver(wlive, wechat_fake, order["id"], paid) == 200
        assert deliver(wlive, wechat_fake, order["id"], paid) == 200  # WeChat retries
        assert balance(wlive, user.id, "routed").balance_nanos == 68 * UNIT
        assert entry_kinds(wlive).count("topup") == 1
        assert order_of(wlive, user, order["id"])["status"] == "paid"

        made = refund(wlive, order["id"], "18.00")
        assert made.status_code == 201, made.text
        record = made.json()
        ((refund_id, sent),) = wechat_fake.refunds.items()
        assert wechat_fake.requests[-1] == ("POST", "/v3/refund/domestic/refunds", True)
        assert sent["out_refund_no"] == record["id"]
        assert sent["amount"] == {"refund": 1800, "total": 6800, "currency": "CNY"}
        assert record["provider_refund_id"] == refund_id
        assert (record["status"], record["hold_status"]) == ("pending", "pending")
        b = balance(wlive, user.id, "routed")
        assert (b.balance_nanos, b.held_nanos) == (68 * UNIT, 18 * UNIT)
        assert order_of(wlive, user, order["id"])["refund_state"] == "pending"

        done = wechat_fake.settle_refund(refund_id, "SUCCESS")
        assert deliver(wlive, wechat_fake, order["id"], done) == 200
        assert deliver(wlive, wechat_fake, order["id"], done) == 200
        b = balance(wlive, user.id, "routed")
        assert (b.balance_nanos, b.held_nanos) == (50 * UNIT, 0)
        after = order_of(wlive, user, order["id"])
        assert after["refund_state"] == "partial" and after["refunded_minor"] == 1800
        (record,) = after["refunds"]
        assert (record["status"], record["hold_status"], record["taken_nanos"]) == (
            "succeeded",
            "settled",
            18 * UNIT,
        )
        assert entry_kinds(wlive).count("refund") == 1
        assert_reconciled(wlive)

    def test_an_abnormal_refund_releases_its_hold(
        self, wlive: LiveServer, wechat_fake: FakeWeChat
    ) -> None:
        user = wlive.make.user()
        order = new_order(wlive, user)
        deliver(wlive, wechat_fake, order["id"], wechat_fake.pay(order["id"]))
        assert refund(wlive, order["id"], "68.00").status_code == 201
        assert balance(wlive, user.id, "routed").held_nanos == 68 * UNIT
        (refund_id,) = wechat_fake.refunds
        deliver(wlive, wechat_fake, order["id"], wechat_fake.settle_refund(refund_id, "ABNORMAL"))
        b = balance(wlive, user.id, "routed")
        assert (b.balance_nanos, b.held_nanos) == (68 * UNIT, 0)
        after = order_of(wlive, user, order["id"])
        assert after["refund_state"] == "none"
        assert after["refunds"][0]["hold_status"] == "released"
        assert "refund" not in entry_kinds(wlive)
        assert_reconciled(wlive)

    def test_a_refund_notice_before_the_payment_notice_is_applied_after_it(
        self, wlive: LiveServer, wechat_fake: FakeWeChat
    ) -> None:
        user = wlive.make.user()
        order = new_order(wlive, user)
        paid = wechat_fake.pay(order["id"])
        # Pretend our server booked the payment late: the refund happens first at WeChat.
        wechat_fake.refunds["5030000000000099"] = {
            "refund_id": "5030000000000099",
            "out_refund_no": "console-refund-1",
            "out_trade_no": order["id"],
            "transaction_id": wechat_fake.orders[order["id"]]["transaction_id"],
            "status": "PROCESSING",
            "amount": {"refund": 1800, "total": 6800, "currency": "CNY"},
        }
        early = wechat_fake.settle_refund("5030000000000099", "SUCCESS")
        assert deliver(wlive, wechat_fake, order["id"], early) == 200  # stored, not applied
        with wlive.db.read() as conn:
            job = conn.execute(select(payment_jobs)).mappings().one()
        assert job["status"] == "queued" and "before its payment" in job["last_error"]
        assert balance(wlive, user.id, "routed").balance_nanos == 0

        assert deliver(wlive, wechat_fake, order["id"], paid) == 200
        assert balance(wlive, user.id, "routed").balance_nanos == 68 * UNIT
        wlive.clock.advance(2)  # the refund notice's retry comes due
        wait_for_jobs(wlive)
        assert balance(wlive, user.id, "routed").balance_nanos == 50 * UNIT
        (record,) = order_of(wlive, user, order["id"])["refunds"]
        assert (record["source"], record["provider_refund_id"]) == ("webhook", "5030000000000099")
        assert entry_kinds(wlive).count("refund") == 1
        assert_reconciled(wlive)


class TestSignatures:
    def test_a_notice_with_a_bad_signature_is_refused_and_stores_nothing(
        self, wlive: LiveServer, wechat_fake: FakeWeChat, keys: WeChatKeys
    ) -> None:
        user = wlive.make.user()
        order = new_order(wlive, user)
        paid = wechat_fake.pay(order["id"])
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        t = int(wlive.clock.now().timestamp())
        with wlive.client() as http:
            answer = http.post(
                "/api/payments/webhooks/wechat",
                content=paid,
                headers=keys.headers(paid, t=t, signer=stranger),
            )
        assert answer.status_code == 400
        with wlive.db.read() as conn:
            assert conn.execute(select(payment_jobs)).all() == []
        assert balance(wlive, user.id, "routed").balance_nanos == 0

    def test_the_fake_refuses_a_request_not_signed_by_the_merchant_key(
        self, start: ServerFactory, keys: WeChatKeys, wechat_fake: FakeWeChat
    ) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        wrong_pem = other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        live = start(
            **{**keys.settings(), "wechat_merchant_private_key": wrong_pem},
            wechat_api_base=wechat_fake.url,
        )
        user = live.make.user()
        with as_user(live, user) as http:
            answer = http.post(
                "/api/payments/orders",
                json={
                    "bucket": "routed",
                    "amount": "68.00",
                    "currency": "CNY",
                    "provider": "wechat",
                },
            )
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "provider_error"
        assert "SIGN_ERROR" in answer.json()["error"]["message"]
        assert wechat_fake.requests == [("POST", "/v3/pay/transactions/native", False)]
        assert wechat_fake.orders == {}

    @pytest.mark.parametrize("forgery", ["stranger_key", "wrong_serial"])
    def test_an_answer_not_signed_by_the_platform_key_is_not_believed(
        self, wlive: LiveServer, wechat_fake: FakeWeChat, forgery: str
    ) -> None:
        if forgery == "stranger_key":
            wechat_fake.answer_signer = rsa.generate_private_key(
                public_exponent=65537, key_size=2048
            )
        else:
            wechat_fake.answer_serial = "PUB_KEY_ID_SOMEONE_ELSE"
        user = wlive.make.user()
        with as_user(wlive, user) as http:
            answer = http.post(
                "/api/payments/orders",
                json={
                    "bucket": "routed",
                    "amount": "68.00",
                    "currency": "CNY",
                    "provider": "wechat",
                },
            )
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "provider_error"
            (listed,) = http.get("/api/payments/orders").json()["items"]
        assert listed["status"] == "failed" and listed["checkout_url"] is None
