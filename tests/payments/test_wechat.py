"""WeChat Pay v3 notifications with keys made in the test: the platform signature and the
AES-256-GCM seal are checked before anything is stored; the ledger follows the notice."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from tallygate.models.payments import inbox_events
from tallygate.payments import orders
from tallygate.payments import repository as repo
from tests.fixtures.payments import WeChatKeys
from tests.fixtures.server import LiveServer
from tests.payments.conftest import ServerFactory
from tests.payments.helpers import (
    UNIT,
    as_user,
    assert_reconciled,
    balance,
    get_order,
    wait_for_jobs,
)


@pytest.fixture(scope="module")
def keys() -> WeChatKeys:
    return WeChatKeys.generate()


@pytest.fixture
def wlive(start: ServerFactory, keys: WeChatKeys) -> LiveServer:
    return start(**keys.settings())


def wechat_order(live: LiveServer, user_id: int, amount: str = "68.00") -> dict[str, Any]:
    """A Native order as ``start`` leaves it (out_trade_no = our public id)."""
    state = live.app.state.tallygate
    with live.db.begin() as conn:
        order = orders.create(
            conn,
            settings=state.settings,
            currencies=state.ledger.currencies,
            user_id=user_id,
            bucket="routed",
            provider="wechat",
            amount=amount,
            currency="CNY",
            now_us=live.ledger.now_us(),
        )
        repo.update_order(
            conn,
            int(order["id"]),
            provider_ref=order["public_id"],
            checkout_url="weixin://wxpay/bizpayurl?pr=test",
        )
        return dict(order)


def paid_resource(
    order: dict[str, Any],
    *,
    total: int = 6800,
    currency: str = "CNY",
    transaction_id: str = "4200000000202601010000000001",
) -> dict[str, Any]:
    return {
        "mchid": "1900000001",
        "appid": "wx0000000000000001",
        "out_trade_no": order["public_id"],
        "transaction_id": transaction_id,
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "success_time": "2026-01-01T08:00:05+08:00",
        "payer": {"openid": "o-test"},
        "amount": {
            "total": total,
            "payer_total": total,
            "currency": currency,
            "payer_currency": currency,
        },
    }


def with_flipped_tag(payload: bytes) -> bytes:
    """The same notice with one bit of its AES-GCM tag (the ciphertext's last byte) flipped."""
    body = json.loads(payload)
    sealed = bytearray(base64.b64decode(body["resource"]["ciphertext"]))
    sealed[-1] ^= 0x01
    body["resource"]["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    return json.dumps(body).encode()


def notify(live: LiveServer, payload: bytes, headers: dict[str, str]) -> Any:
    with live.client() as http:
        answer = http.post("/api/payments/webhooks/wechat", content=payload, headers=headers)
    wait_for_jobs(live)
    return answer


def inbox_count(live: LiveServer) -> int:
    with live.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(inbox_events)).scalar_one())


class TestNotify:
    def test_a_verified_notice_credits_once(self, wlive: LiveServer, keys: WeChatKeys) -> None:
        user = wlive.make.user()
        order = wechat_order(wlive, user.id)
        payload = keys.notice("TRANSACTION.SUCCESS", paid_resource(order))
        t = int(wlive.clock.now().timestamp())
        for _ in range(3):
            answer = notify(wlive, payload, keys.headers(payload, t=t))
            assert answer.status_code == 200 and answer.json() == {
                "code": "SUCCESS",
                "message": "OK",
            }
        assert balance(wlive, user.id, "routed").balance_nanos == 68 * UNIT
        with as_user(wlive, user) as http:
            paid = get_order(http, order["public_id"])
        assert paid["status"] == "paid"
        assert paid["entry"]["idempotency_key"] == "topup:wechat:4200000000202601010000000001"
        assert inbox_count(wlive) == 1
        assert_reconciled(wlive)

    def test_bad_signature_wrong_serial_stale_or_broken_seal_are_refused(
        self, wlive: LiveServer, keys: WeChatKeys
    ) -> None:
        user = wlive.make.user()
        order = wechat_order(wlive, user.id)
        payload = keys.notice("TRANSACTION.SUCCESS", paid_resource(order))
        t = int(wlive.clock.now().timestamp())
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        wrong_key = keys.notice("TRANSACTION.SUCCESS", paid_resource(order), key="0" * 32)
        good = keys.headers(payload, t=t)
        broken_tag = with_flipped_tag(payload)  # signed by the platform, but the seal is broken
        cases = [
            (broken_tag, keys.headers(broken_tag, t=t)),
            (payload, keys.headers(payload, t=t, signer=stranger)),
            (payload, keys.headers(payload, t=t, serial="PUB_KEY_ID_SOMEONE_ELSE")),
            (payload, keys.headers(payload, t=t - 301)),
            (payload.replace(b'"summary": "ok"', b'"summary": "OK"'), good),
            (wrong_key, keys.headers(wrong_key, t=t)),
            (payload, {"Content-Type": "application/json"}),
        ]
        for body, headers in cases:
            answer = notify(wlive, body, headers)
            assert answer.status_code == 400, headers
            assert answer.json()["error"]["code"] == "invalid_signature"
        assert inbox_count(wlive) == 0
        assert balance(wlive, user.id, "routed").balance_nanos == 0

    def test_an_amount_mismatch_credits_nothing_and_flags(
        self, wlive: LiveServer, keys: WeChatKeys
    ) -> None:
        user = wlive.make.user()
        order = wechat_order(wlive, user.id)
        payload = keys.notice("TRANSACTION.SUCCESS", paid_resource(order, total=680))
        notify(wlive, payload, keys.headers(payload, t=int(wlive.clock.now().timestamp())))
        with as_user(wlive, user) as http:
            flagged = get_order(http, order["public_id"])
        assert flagged["status"] == "pending" and flagged["flag"] == "amount_mismatch"
        assert balance(wlive, user.id, "routed").balance_nanos == 0

    def test_a_refund_notice_debits_once(self, wlive: LiveServer, keys: WeChatKeys) -> None:
        user = wlive.make.user()
        order = wechat_order(wlive, user.id)
        t = int(wlive.clock.now().timestamp())
        paid = keys.notice("TRANSACTION.SUCCESS", paid_resource(order))
        notify(wlive, paid, keys.headers(paid, t=t))
        refund = {
            "mchid": "1900000001",
            "out_trade_no": order["public_id"],
            "transaction_id": "4200000000202601010000000001",
            "out_refund_no": "console-1",
            "refund_id": "50000000382019052709732678859",
            "refund_status": "SUCCESS",
            "amount": {"total": 6800, "refund": 1800, "payer_total": 6800, "payer_refund": 1800},
        }
        for _ in range(2):  # two distinct notices announcing the same refund
            payload = keys.notice("REFUND.SUCCESS", refund)
            assert notify(wlive, payload, keys.headers(payload, t=t)).status_code == 200
        assert balance(wlive, user.id, "routed").balance_nanos == 50 * UNIT
        with as_user(wlive, user) as http:
            (record,) = get_order(http, order["public_id"])["refunds"]
        assert record["provider_refund_id"] == "50000000382019052709732678859"
        abnormal = keys.notice("REFUND.ABNORMAL", {**refund, "refund_status": "ABNORMAL"})
        notify(wlive, abnormal, keys.headers(abnormal, t=t))
        assert balance(wlive, user.id, "routed").balance_nanos == 68 * UNIT
        assert_reconciled(wlive)

    def test_a_closed_order_expires(self, wlive: LiveServer, keys: WeChatKeys) -> None:
        user = wlive.make.user()
        order = wechat_order(wlive, user.id)
        closed = keys.notice(
            "TRANSACTION.CLOSED", {**paid_resource(order), "trade_state": "CLOSED"}
        )
        notify(wlive, closed, keys.headers(closed, t=int(wlive.clock.now().timestamp())))
        with as_user(wlive, user) as http:
            assert get_order(http, order["public_id"])["status"] == "expired"
