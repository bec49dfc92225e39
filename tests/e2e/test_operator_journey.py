"""An operator's journey in a real headless Chromium (Debian's), against a real server on
loopback with PostgreSQL: sign in with the password and a TOTP code, approve a manual bank
transfer with the amount on the statement, refund part of a top-up that was partly spent (the
pages show the credit already used and the receipts that used it), find each action in the
audit trail, and verify the chain. Screenshots of each page are saved."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from tallygate.kit.clock import to_epoch_us
from tallygate.web.render import money
from tests.fixtures.browser import Browser
from tests.fixtures.factories import PASSWORD, totp_code
from tests.fixtures.gateway import ROUTED_CHAT, World, WorldFactory

BANK = "IBAN XX00 TEST 0000, reference: your order id"


@pytest.fixture
def world(make_world: WorldFactory) -> World:
    return make_world(payments_sandbox=True, bank_instructions=BANK)


@pytest.fixture
def browser(chromium: webdriver.Chrome, world: World) -> Iterator[Browser]:
    b = Browser(chromium, world.base_url)
    yield b
    b.collect()
    assert b.outside_requests() == [], "a page requested something outside 127.0.0.1"


def arrive(b: Browser, path_part: str) -> None:
    WebDriverWait(b.driver, 10).until(lambda d: path_part in d.current_url)


def bank_transfer_awaiting_review(world: World, user: Any) -> str:
    with world.as_user(user) as api:
        made = api.post(
            "/api/payments/orders", json={"bucket": "credit", "amount": "50", "provider": "bank"}
        )
        assert made.status_code == 201, made.text
        order_id: str = made.json()["id"]
        sent = api.post(f"/api/payments/orders/{order_id}/transfer", json={"reference": "WIRE-42"})
        assert sent.json()["status"] == "awaiting_review", sent.text
    return order_id


def partly_spent_topup(world: World, user: Any) -> tuple[str, dict[str, Any]]:
    """A paid ¥10 sandbox top-up of the Routed balance, and the receipt of a chat it paid for."""
    with world.as_user(user) as api:
        made = api.post(
            "/api/payments/orders", json={"bucket": "routed", "amount": "10", "provider": "sandbox"}
        )
        assert made.status_code == 201, made.text
        order_id: str = made.json()["id"]
        api.post(f"/sandbox/checkout/{order_id}/pay")
    _key_id, key = world.new_key(user)
    with world.openai(key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=ROUTED_CHAT, messages=[{"role": "user", "content": "use some of my top-up"}]
        )
    return order_id, world.receipt(raw.headers["x-request-id"])


class TestOperatorJourney:
    def test_totp_approve_refund_audit_verify(self, browser: Browser, world: World) -> None:
        b = browser
        payer = world.new_user()
        spender = world.new_user()
        transfer = bank_transfer_awaiting_review(world, payer)
        topup, receipt = partly_spent_topup(world, spender)
        charge = int(receipt["charge_nanos"])
        assert charge > 0

        # sign in: the password, then the code from the authenticator app
        b.go("/login?next=/operator/topups")
        b.fill("#email", world.operator.email)
        b.fill("#password", PASSWORD)
        b.submit("main button[type=submit]")
        arrive(b, "/login/totp")
        assert "Enter your code" in b.text("h1")
        b.screenshot("operator-totp")
        b.fill("#code", totp_code(to_epoch_us(world.clock.now())))
        b.submit("main button[type=submit]")
        arrive(b, "/operator/topups")

        # the review queue holds the transfer; approve it with the statement amount
        queue = b.text("#review-queue")
        assert transfer in queue and "WIRE-42" in queue
        b.screenshot("operator-topups")
        b.find(f"#review-queue a[href='/operator/topups/{transfer}']").click()
        arrive(b, f"/operator/topups/{transfer}")
        b.fill("#ap-amount", "50.00")
        b.fill("#ap-reason", "seen on the statement")
        b.submit("#review button[type=submit]")
        arrive(b, "done=approved")
        assert "$50.00 credited to Credit" in b.text("[data-testid=done]")
        assert world.balance(payer, "credit") == 50_000_000_000
        b.screenshot("operator-approved")

        # refund part of the partly spent top-up: the page shows what was already used
        b.go(f"/operator/topups/{topup}")
        used = b.text("#credit-used")
        assert f"{money(charge, 'CNY')} of ¥10.00 already used" in used
        assert receipt["request_id"] in used
        b.screenshot("operator-topup-partly-spent")
        b.fill("#rf-amount", "4")
        b.fill("#rf-reason", "customer asked for part back")
        b.submit("#refund button[type=submit]")
        arrive(b, "/operator/refunds/")
        assert b.text("[data-testid=credit-used]") == f"yes: {money(charge, 'CNY')}"
        assert receipt["request_id"] in b.text("#related-receipts")
        assert world.balance(spender, "routed") == 10_000_000_000 - charge - 4_000_000_000
        b.screenshot("operator-refund")

        # each action is in the audit trail
        b.go("/operator/audit?actor=" + world.operator.email)
        events = b.text("#audit-events")
        assert "order.approve" in events and f"order:{transfer}" in events
        assert "refund.start" in events and f"order:{topup}" in events
        assert "seen on the statement" in events and "customer asked for part back" in events
        b.screenshot("operator-audit")

        # and the chain verifies
        b.submit("#verify-chain")
        WebDriverWait(b.driver, 10).until(
            lambda d: "chain-result" in d.page_source  # the answer page has arrived
        )
        assert "The audit chain verifies" in b.text("#chain-result")
        b.screenshot("operator-audit-verified")
        b.collect()
        assert b.console_errors == [], b.console_errors
        assert b.failed == [], b.failed
