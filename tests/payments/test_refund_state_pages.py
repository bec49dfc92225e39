"""What a person sees of a refund still in flight: the wallet's post-payment panel and the order
pages say "refund in progress" (its amount held), never "refunded", until the provider confirms."""

from __future__ import annotations

from tests.fixtures.payments import FakeStripe
from tests.fixtures.server import LiveServer
from tests.payments.helpers import deliver
from tests.payments.test_refund_holds import operator_refund, paid
from tests.web.helpers import session_client


def pages(live: LiveServer, token: str, order_id: str) -> tuple[str, str, str]:
    with session_client(live.base_url, token) as browser:
        wallet = browser.get("/", params={"order": order_id})
        order = browser.get(f"/orders/{order_id}")
        orders = browser.get("/orders")
    assert wallet.status_code == order.status_code == orders.status_code == 200
    return wallet.text, order.text, orders.text


class TestRefundInFlight:
    def test_pages_say_in_progress_while_held_then_partly_refunded(
        self, live: LiveServer, stripe_fake: FakeStripe
    ) -> None:
        user, order, _ = paid(live, stripe_fake)
        token = live.make.session_token(user)
        stripe_fake.refund_status = "pending"
        assert operator_refund(live, order["id"], amount="4.00").status_code == 201

        wallet, detail, listing = pages(live, token, order["id"])
        assert "A refund of this top-up is in progress" in wallet
        assert "refunded" not in wallet.split("A refund of this top-up", 1)[1].split("</p>")[0]
        assert "refund in progress" in detail and "refund in progress" in listing

        (re_id,) = list(stripe_fake.refunds)
        deliver(
            live,
            stripe_fake.event("refund.updated", stripe_fake.set_refund_status(re_id, "succeeded")),
        )
        wallet, detail, listing = pages(live, token, order["id"])
        assert "This top-up was partly refunded" in wallet and "in progress" not in wallet
        assert "partly refunded" in detail and "partly refunded" in listing
