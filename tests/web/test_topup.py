"""Top-up from the console through the sandbox, and the post-payment state on the wallet."""

from __future__ import annotations

import httpx

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
