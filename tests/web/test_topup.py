"""Top-up from the console through the sandbox, and the post-payment state on the wallet."""

from __future__ import annotations

import re

import httpx
import pytest

from tallygate.payments import orders
from tallygate.web.render import money
from tests.fixtures.gateway import START_BALANCE, World, WorldFactory
from tests.web.helpers import csrf_of, session_client


def start(client: httpx.Client, **fields: str) -> httpx.Response:
    token = csrf_of(client.get("/topup"))
    return client.post("/topup", data={"csrf_token": token, **fields})


def order_id_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert "/sandbox/checkout/" in location
    return location.rsplit("/", 1)[1]


class TestTopUp:
    def test_pay_through_the_sandbox_and_see_what_arrived(self, make_world: WorldFactory) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            form = client.get("/topup").text
            assert "TEST MODE" in form and "Routed balance" in form and "Credit" in form
            order = order_id_of(start(client, bucket="routed", amount="10", provider="sandbox"))
            waiting = client.get("/", params={"order": order}).text
            assert "Waiting for the payment provider" in waiting
            assert "arrived" not in waiting
            client.post(f"/sandbox/checkout/{order}/pay")
            text = client.get("/", params={"order": order}).text
        assert "<strong>¥10.00</strong> arrived in your <strong>Routed balance</strong>" in text
        assert f"Balance now {'¥15.00'}, ready to use" in text
        assert "Ledger entry #" in text
        assert f'href="/payments/orders/{order}/receipt"' in text
        assert 'href="/keys">Create an API key' in text
        assert f'data-testid="balance-routed">¥{(START_BALANCE + 10 * 10**9) // 10**9}.00<' in text

    def test_a_failed_payment_adds_nothing_and_says_so(self, make_world: WorldFactory) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="credit", amount="5", provider="sandbox"))
            client.post(f"/sandbox/checkout/{order}/fail")
            text = client.get("/", params={"order": order}).text
        assert "The payment failed; no balance was added." in text
        assert "arrived" not in text
        assert 'data-testid="balance-credit">$5.00<' in text

    def test_an_amount_out_of_range_is_explained(self, make_world: WorldFactory) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            refused = start(client, bucket="credit", amount="0.10", provider="sandbox")
            missing = start(client, amount="5")
        assert refused.status_code in (400, 422) and 'role="alert"' in refused.text
        assert missing.status_code == 400
        assert "choose a bucket, an amount and a provider" in missing.text

    def test_another_users_order_is_not_found(self, make_world: WorldFactory) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="routed", amount="10", provider="sandbox"))
        mallory = world.new_user()
        with session_client(world.base_url, world.make.session_token(mallory)) as client:
            peek = client.get("/", params={"order": order})
        assert peek.status_code == 404
        assert "¥10.00" not in peek.text

    def test_without_a_provider_the_page_says_what_to_do(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            text = client.get("/topup").text
        assert "No payment provider is enabled" in text


class TestOrders:
    def test_an_order_page_shows_how_much_of_its_credit_requests_used(
        self, make_world: WorldFactory
    ) -> None:
        world: World = make_world(payments_sandbox=True)
        newcomer = world.new_user()
        _, key = world.new_key(newcomer, label="fresh")
        with session_client(world.base_url, world.make.session_token(newcomer)) as client:
            order = order_id_of(start(client, bucket="routed", amount="10", provider="sandbox"))
            pending = client.get(f"/orders/{order}").text
            client.post(f"/sandbox/checkout/{order}/pay")
            with world.openai(key) as sdk:
                raw = sdk.chat.completions.with_raw_response.create(
                    model="tg-chat:routed", messages=[{"role": "user", "content": "hi"}]
                )
            request_id = raw.headers["x-request-id"]
            charge = int(world.receipt(request_id)["charge_nanos"])
            text = client.get(f"/orders/{order}").text
            listing = client.get("/orders").text
        assert "Continue to payment" in pending
        assert "Status: paid" in text
        assert "Credited <strong>¥10.00</strong> to your <strong>Routed balance</strong>" in text
        used = money(charge, "CNY")
        assert f'data-testid="used"><strong>{used}</strong> of ¥10.00 used' in text
        assert f'href="/receipts/{request_id}"' in text
        assert "Continue to payment" not in text
        assert order in listing and "¥10.00" in listing

    def test_another_users_order_page_is_not_found(self, make_world: WorldFactory) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="routed", amount="10", provider="sandbox"))
        mallory = world.new_user()
        with session_client(world.base_url, world.make.session_token(mallory)) as client:
            assert client.get(f"/orders/{order}").status_code == 404
            assert order not in client.get("/orders").text


def move(world: World, order: str, to: str, detail: str = "") -> None:
    """An order's state moved as the provider's event or an operator would move it."""
    with world.db.begin() as conn:
        row = orders.get(conn, order)
        orders.move(conn, int(row["id"]), to, source="system", now_us=world.now_us(), detail=detail)


class TestPostPayment:
    def test_the_checkout_returns_to_the_wallet_panel(self, make_world: WorldFactory) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="routed", amount="10", provider="sandbox"))
            paid = client.post(f"/sandbox/checkout/{order}/pay")
            old = client.get(f"/payments/return/{order}")
            canceled = client.get(f"/payments/return/{order}", params={"canceled": "1"})
            with world.as_user() as api:
                state = api.get(f"/api/payments/orders/{order}/state").json()
        assert paid.status_code == 303 and paid.headers["location"] == f"/?order={order}"
        assert old.status_code == 303 and old.headers["location"] == f"/?order={order}"
        assert canceled.headers["location"] == f"/?order={order}&canceled=1"
        assert state["phase"] == "ready"

    def test_signed_out_the_return_asks_to_sign_in_and_comes_back(
        self, make_world: WorldFactory
    ) -> None:
        world: World = make_world(payments_sandbox=True)
        with httpx.Client(base_url=world.base_url) as client:
            back = client.get("/", params={"order": "ord_whatever"})
        assert back.status_code == 303
        assert back.headers["location"] == "/login?next=%2F%3Forder%3Dord_whatever"

    def test_pending_confirms_itself_and_offers_the_checkout(
        self, make_world: WorldFactory
    ) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="routed", amount="10", provider="sandbox"))
            text = client.get("/", params={"order": order, "canceled": "1"}).text
        assert "Confirming…" in text
        assert f'data-poll="/api/payments/orders/{order}/state"' in text
        assert "You left the checkout without paying: nothing was charged." in text
        assert f'/sandbox/checkout/{order}">Continue to payment' in text
        assert "arrived" not in text

    def test_processing_keeps_confirming_without_a_pay_action(
        self, make_world: WorldFactory
    ) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="credit", amount="5", provider="sandbox"))
            client.post(f"/sandbox/checkout/{order}/processing")
            text = client.get("/", params={"order": order}).text
        assert 'data-testid="order-status">processing<' in text
        assert "Confirming…" in text and "A delayed payment method" in text
        assert "Continue to payment" not in text and "arrived" not in text

    @pytest.mark.parametrize(
        ("to", "says"),
        [
            ("failed", "The payment failed; no balance was added."),
            ("canceled", "This order was canceled; nothing was charged."),
            ("expired", "This order expired before any payment arrived; nothing was charged."),
        ],
    )
    def test_closed_orders_say_so_and_never_offer_to_pay(
        self, make_world: WorldFactory, to: str, says: str
    ) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="routed", amount="10", provider="sandbox"))
            move(world, order, to)
            text = client.get("/", params={"order": order}).text
            order_page = client.get(f"/orders/{order}").text
        assert says in text and "No balance was added" in text
        assert 'href="/topup?bucket=routed">Start a new top-up of the Routed balance' in text
        assert "Continue to payment" not in text and "data-poll" not in text
        assert "Continue to payment" not in order_page
        assert 'data-testid="balance-routed">¥5.00<' in text

    def test_awaiting_review_then_rejected(self, make_world: WorldFactory) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="credit", amount="5", provider="sandbox"))
            move(world, order, "awaiting_review")
            review = client.get("/", params={"order": order}).text
            move(world, order, "rejected", detail="no such transfer on the statement")
            rejected = client.get("/", params={"order": order}).text
        assert "Your transfer is waiting for an operator to check it." in review
        assert "Nothing to do now: an operator checks your transfer" in review
        assert "Start a new top-up" not in review and "Continue to payment" not in review
        assert "The transfer was rejected; no balance was added." in rejected
        assert "Continue to payment" not in rejected
        assert 'data-testid="balance-credit">$5.00<' in rejected

    def test_a_refunded_top_up_says_so_and_offers_nothing_to_pay(
        self, make_world: WorldFactory
    ) -> None:
        world: World = make_world(payments_sandbox=True)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            order = order_id_of(start(client, bucket="routed", amount="10", provider="sandbox"))
            client.post(f"/sandbox/checkout/{order}/pay")
            with world.as_operator() as op:
                refund = op.post(
                    f"/admin/api/payments/orders/{order}/refunds",
                    json={"amount": "4", "reason": "asked by the user"},
                )
                assert refund.status_code == 201, refund.text
            refund_id = refund.json()["refunds"][0]["id"] if "refunds" in refund.json() else None
            text = client.get("/", params={"order": order}).text
            ledger = client.get("/ledger", params={"bucket": "routed", "kind": "refund"}).text
            cause = re.search(r'href="(/orders\?refund=[^"]+)"', ledger)
            assert cause is not None, ledger
            followed = client.get(cause.group(1))
            order_page = client.get(f"/orders/{order}").text
        mallory = world.new_user()
        with session_client(world.base_url, world.make.session_token(mallory)) as client:
            peek = client.get(cause.group(1))
        assert followed.status_code == 303
        assert followed.headers["location"].startswith(f"/orders/{order}#refund-")
        refund_anchor = followed.headers["location"].split("#", 1)[1]
        assert f'id="{refund_anchor}">¥4.00 — succeeded' in order_page
        assert refund_id is None or refund_anchor == f"refund-{refund_id}"
        assert peek.status_code == 404 and order not in peek.text
        assert "<strong>¥10.00</strong> arrived in your <strong>Routed balance</strong>" in text
        assert "This top-up was partly refunded" in text
        assert "Continue to payment" not in text and "data-poll" not in text
