"""The console in a real headless Chromium (Debian's), against a real server on loopback with
PostgreSQL: a newcomer's journey, and every page as a user and as an operator with no console
error, no failed request and nothing requested from outside 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tallygate.kit.clock import to_epoch_us
from tallygate.web.render import money
from tests.fixtures.browser import SCREENSHOTS, Browser
from tests.fixtures.factories import PASSWORD, totp_code
from tests.fixtures.gateway import CHAT, ROUTED_CHAT, World, WorldFactory
from tests.research import helpers as research

HI = [{"role": "user", "content": "hello from the browser test"}]


@pytest.fixture
def browser(chromium: webdriver.Chrome, world: World) -> Iterator[Browser]:
    b = Browser(chromium, world.base_url)
    yield b
    b.collect()
    assert b.outside_requests() == [], "a page requested something outside 127.0.0.1"


def sign_in(
    b: Browser, email: str, password: str = PASSWORD, *, world: World | None = None
) -> None:
    """Sign in; an operator (pass the ``world``, whose clock their authenticator app reads)
    then enters the code from the factory's TOTP secret."""
    b.go("/login")
    b.fill("#email", email)
    b.fill("#password", password)
    b.submit("main button[type=submit]")
    if "/login/totp" in b.driver.current_url:
        assert world is not None, "an operator signs in with a code: pass the world"
        b.fill("#code", totp_code(to_epoch_us(world.clock.now())))
        b.submit("main button[type=submit]")


def _routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, looking inside included routers (FastAPI wraps them since 0.16x)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)


def page_routes(world: World) -> list[str]:
    """Every GET page the console serves, from the app's router."""
    return sorted(
        r.path
        for r in _routes(world.app.routes)
        if "GET" in r.methods and r.endpoint.__module__.startswith("tallygate.web.")
    )


class TestChromium:
    def test_debians_chromium_and_driver_pair_up(self, browser: Browser) -> None:
        """Fails loudly (never skips under CI) when chromium and chromium-driver disagree."""
        browser.go("/login")
        assert "Sign in" in browser.driver.title
        assert browser.driver.capabilities["browserName"] in ("chrome", "chromium")


class TestNewcomer:
    def test_sign_up_top_up_key_streamed_playground_receipt(
        self, browser: Browser, world: World
    ) -> None:
        b = browser
        with world.as_operator() as ops:
            starter = ops.post(
                "/admin/api/credits/campaigns",
                json={"name": "Welcome", "kind": "starter", "bucket": "credit", "amount": "2"},
            )
            assert starter.status_code == 201, starter.text
        b.go("/signup")
        b.fill("#email", "newcomer@example.com")
        b.fill("#password", PASSWORD)
        b.submit("main button[type=submit]")
        assert b.driver.current_url.endswith("/?welcome=1")
        body = b.text("main")
        assert "Credit" in body and "Routed balance" in body
        # the starter credit, with its ledger entry
        assert b.text("[data-testid=balance-credit]") == "$2.00"
        assert b.text("[data-testid=balance-routed]") == "¥0.00"
        credit_card = b.text("section[aria-labelledby=bucket-credit]")
        assert "grant" in credit_card and "+$2.00" in credit_card
        b.screenshot("wallet-welcome")
        b.go("/ledger?bucket=credit&kind=grant")
        grant = b.text("tbody tr")
        assert "grant" in grant and "+$2.00" in grant and "Welcome" in grant

        # a sandbox top-up of the Routed balance lands on the wallet's post-payment panel
        b.go("/topup?bucket=routed")
        b.find("button[data-value='10']").click()
        b.find("input[name=provider][value=sandbox]").click()
        b.submit("form[action='/topup'] button[type=submit]")
        assert "/sandbox/checkout/" in b.driver.current_url
        order = b.driver.current_url.rsplit("/", 1)[1]
        b.submit("button[value=pay]")
        assert b.driver.current_url.endswith(f"/?order={order}")
        post = b.text("#post-payment")
        assert "¥10.00 arrived in your Routed balance" in post and "ready to use" in post
        entry_link = b.find("#post-payment a[href^='/ledger']").get_attribute("href") or ""
        assert "#entry-" in entry_link
        assert b.text("[data-testid=balance-routed]") == "¥10.00"
        b.screenshot("post-payment-newcomer")

        b.go("/keys")
        b.fill("#label", "browser key")
        b.fill("#project", "journey")
        b.submit("form[action='/keys'] button[type=submit]")
        key = b.find("#new-key").get_attribute("value")
        assert key and key.startswith("tg")
        b.find("button[data-copy]").click()
        assert b.find("button[data-copy]").text == "Copied"
        b.screenshot("key-created")
        b.go("/keys")
        assert key not in b.driver.page_source
        assert "browser key" in b.text("main")

        # the playground streams the answer into the page, then its receipt under it
        b.go("/playground")
        b.driver.execute_script("window.tallygateSamePage = true;")
        Select(b.find("#model")).select_by_value(ROUTED_CHAT)
        b.fill("#api_key", key)
        b.fill("#message", "hello from the browser test")
        b.find("form[action='/playground'] button[type=submit]").click()
        WebDriverWait(b.driver, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=playground-charge]")
        )
        b.collect()
        assert b.driver.execute_script("return window.tallygateSamePage === true;")
        assert b.driver.current_url.endswith("/playground")  # no form post: streamed in place
        assert b.text("[data-testid=stream-answer]")
        assert b.text("#live-state") == "done"
        link = b.find("#pr-h a").get_attribute("href") or ""
        request_id = link.rsplit("/", 1)[1]
        receipt = world.receipt(request_id)
        assert receipt["streamed"]
        charge = int(receipt["charge_nanos"])
        assert charge > 0
        assert b.text("[data-testid=playground-charge]") == money(charge, "CNY")
        assert b.text("[data-testid=playground-bucket]") == "Routed balance (routed route)"
        assert b.text("[data-testid=playground-balance]") == money(10 * 10**9 - charge, "CNY")
        b.screenshot("playground")

        b.go("/receipts")
        assert request_id in b.text("main")
        b.screenshot("receipts")
        b.find(f"a[href='/receipts/{request_id}']").click()
        b.collect()
        assert b.text("[data-testid=charge]") == money(charge, "CNY")
        assert "Routed balance" in b.text("main")
        b.screenshot("receipt")

        b.go("/")
        assert b.text("[data-testid=balance-routed]") == money(10 * 10**9 - charge, "CNY")
        assert b.text("[data-testid=balance-credit]") == "$2.00"
        b.screenshot("wallet-after-request")
        assert b.console_errors == []
        assert b.failed == []


class TestTopUp:
    def test_sandbox_top_up_lands_on_the_post_payment_state(
        self, chromium: webdriver.Chrome, make_world: WorldFactory
    ) -> None:
        world = make_world(payments_sandbox=True)
        b = Browser(chromium, world.base_url)
        sign_in(b, world.user.email)
        b.go("/topup?bucket=routed")
        b.find("button[data-value='10']").click()
        b.find("input[name=provider][value=sandbox]").click()
        b.submit("form[action='/topup'] button[type=submit]")
        assert "/sandbox/checkout/" in b.driver.current_url
        order = b.driver.current_url.rsplit("/", 1)[1]
        b.submit("button[value=pay]")
        assert b.driver.current_url.endswith(f"/?order={order}")  # back on the wallet itself
        post = b.text("#post-payment")
        assert "¥10.00 arrived in your Routed balance" in post
        assert "ready to use" in post
        b.screenshot("post-payment")
        b.find("#post-payment a[href^='/ledger']").click()
        b.collect()
        entry = b.driver.current_url.rsplit("#entry-", 1)[1]
        assert "+¥10.00" in b.text(f"#entry-{entry}")
        assert b.console_errors == [] and b.failed == [] and b.outside_requests() == []


class TestConfirming:
    def test_a_pending_payment_resolves_itself_on_the_wallet(
        self, browser: Browser, world: World
    ) -> None:
        b = browser
        with world.as_user() as api:
            made = api.post(
                "/api/payments/orders",
                json={"bucket": "credit", "amount": "5", "provider": "sandbox"},
            )
            order = made.json()["id"]
        sign_in(b, world.user.email)
        b.go(f"/?order={order}")
        assert "Confirming…" in b.text("[data-testid=confirming]")
        b.screenshot("post-payment-confirming")
        with world.as_user() as api:  # the payment completes while the page is open
            assert api.post(f"/sandbox/checkout/{order}/pay").status_code in (200, 303)
        WebDriverWait(b.driver, 15).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=arrived]")
        )
        b.collect()
        assert "$5.00 arrived in your Credit" in b.text("#post-payment")
        assert not b.driver.find_elements(By.CSS_SELECTOR, "[data-testid=confirming]")
        assert b.text("[data-testid=balance-credit]") == "$10.00"
        assert b.console_errors == [] and b.failed == []


UNLABELLED = """
return Array.from(document.querySelectorAll('input, select, textarea, button, img'))
  .filter(e => !['hidden', 'submit', 'button', 'reset'].includes(e.type) || e.tagName !== 'INPUT')
  .filter(e => {
    if (e.tagName === 'IMG') return !e.hasAttribute('alt');
    if (e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')) return false;
    if (e.tagName === 'BUTTON') return !e.textContent.trim();
    return !(e.labels && e.labels.length);
  })
  .map(e => e.outerHTML.slice(0, 120));
"""
"""Form controls a screen reader could not name: no ``<label>``, no aria-label, an empty
button, an image without ``alt``."""


OVERFLOW = """
const wide = document.documentElement.scrollWidth > document.documentElement.clientWidth + 1;
return wide ? Array.from(document.querySelectorAll('main *'))
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
               && !e.closest('.scroll'))
  .slice(0, 5).map(e => e.outerHTML.slice(0, 120)) : [];
"""
"""Elements that make the page wider than the window (wide tables scroll inside their own
``.scroll`` box instead)."""


class TestPhone:
    def test_the_main_pages_fit_a_phone_screen(self, browser: Browser, world: World) -> None:
        b = browser
        with world.openai() as client:
            client.chat.completions.create(model=CHAT, messages=HI)  # type: ignore[arg-type]
        sign_in(b, world.user.email)
        b.driver.set_window_size(390, 844)
        try:
            for path in ("/", "/ledger", "/topup", "/keys", "/receipts", "/marketplace", "/redeem"):
                b.go(path)
                assert b.driver.execute_script(OVERFLOW) == [], path
            b.go("/")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            b.driver.save_screenshot(str(SCREENSHOTS / "phone-wallet.png"))
        finally:
            b.driver.set_window_size(1280, 1000)
        b.collect()
        assert b.console_errors == [] and b.failed == []

    def test_the_operator_console_fits_a_phone_screen(self, browser: Browser, world: World) -> None:
        b = browser
        sign_in(b, world.operator.email, world=world)
        b.driver.set_window_size(390, 844)
        try:
            for path in (
                "/operator",
                f"/operator/users/{world.user.id}",
                "/operator/topups",
                "/operator/refunds",
                "/operator/channels",
                "/operator/models",
                "/operator/campaigns",
                "/operator/audit",
                "/operator/usage",
                "/operator/exports",
            ):
                b.go(path)
                assert b.driver.execute_script(OVERFLOW) == [], path
        finally:
            b.driver.set_window_size(1280, 1000)
        b.collect()
        assert b.console_errors == [] and b.failed == []


class TestEveryPage:
    def _visit(self, b: Browser, world: World, paths: list[str], who: str, **ids: str) -> None:
        for path in paths:
            url = path
            for name, value in ids.items():
                url = url.replace("{" + name + "}", value)
            assert "{" not in url, f"no value for the path parameter of {path}"
            b.go(url)
            assert "Traceback" not in b.driver.page_source
            assert b.find("h1").text, url
            assert b.driver.execute_script(UNLABELLED) == [], url
            b.screenshot(f"{who}-" + (url.strip("/").replace("/", "-") or "wallet"))
        b.collect()
        assert b.console_errors == [], b.console_errors
        assert b.failed == [], b.failed

    def test_as_a_user_and_as_an_operator(self, browser: Browser, world: World) -> None:
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(model=ROUTED_CHAT, messages=HI)  # type: ignore[arg-type]
        request_id = raw.headers["x-request-id"]
        world.receipt(request_id)
        with world.as_user() as api:
            made = api.post(
                "/api/payments/orders",
                json={"bucket": "routed", "amount": "10", "provider": "sandbox"},
            )
            assert made.status_code == 201, made.text
            order_id = made.json()["id"]
            api.post(f"/sandbox/checkout/{order_id}/pay")
            run_id = research.wait(api, research.start(api).json()["id"])["id"]
        routes = page_routes(world)
        console = [p for p in routes if p.startswith("/operator")]
        user_pages = [p for p in routes if p not in console]
        assert {
            "/",
            "/keys",
            "/receipts",
            "/marketplace",
            "/topup",
            "/redeem",
            "/playground",
            "/research",
            "/research/{run_id}",
        } <= set(routes)

        sign_in(browser, world.user.email)
        self._visit(
            browser,
            world,
            user_pages,
            "user",
            request_id=request_id,
            order_id=order_id,
            run_id=run_id,
        )
        browser.go("/operator")
        assert "operators only" in browser.text("body")
        browser.collect()
        assert any("403" in e for e in browser.failed + browser.console_errors)
        browser.failed.clear()  # that 403 was the point
        browser.console_errors.clear()

        browser.driver.delete_all_cookies()
        sign_in(browser, world.operator.email, world=world)
        # the operator's own pages, minus a receipt, an order and a research run page of the user
        # console (an operator has none of their own); the operator console's order and refund pages
        # show the user's top-up and a refund of part of it
        with world.as_operator() as admin:
            refund = admin.post(
                f"/admin/api/payments/orders/{order_id}/refunds",
                json={"amount": "1", "reason": "every page visit"},
            )
            assert refund.status_code == 201, refund.text
            campaign = admin.post(
                "/admin/api/credits/campaigns",
                json={"name": "Every page", "bucket": "credit", "amount": "1"},
            )
            assert campaign.status_code == 201, campaign.text
        mine = [
            p
            for p in routes
            if "{request_id}" not in p
            and "{run_id}" not in p
            and ("{order_id}" not in p or p.startswith("/operator"))
        ]
        self._visit(
            browser,
            world,
            mine,
            "operator",
            user_id=str(world.user.id),
            order_id=order_id,
            refund_id=refund.json()["id"],
            channel_id=str(world.channel_ids["official-a"]),
            campaign_id=str(campaign.json()["id"]),
            **{"name:path": CHAT},
        )


class TestBoundaries:
    """Another user's ids in the URL, a forged form and bad input, in the browser: a readable
    4xx page every time, nothing of the other user's, no stack trace."""

    def _refused(self, b: Browser, status: str, *absent: str) -> str:
        def arrived(driver: webdriver.Chrome) -> bool:
            try:
                return status in driver.find_element(By.CSS_SELECTOR, "h1").text
            except WebDriverException:  # still navigating
                return False

        WebDriverWait(b.driver, 10).until(arrived)  # a form's answer may still be loading
        page = b.driver.page_source
        assert "Traceback" not in page and 'File "' not in page
        for text in absent:
            assert text not in page, (b.driver.current_url, text)
        b.collect()
        b.failed.clear()  # the 4xx was the point
        b.console_errors.clear()
        return page

    def test_other_users_data_forged_forms_and_bad_input(
        self, browser: Browser, world: World
    ) -> None:
        b = browser
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(model=ROUTED_CHAT, messages=HI)  # type: ignore[arg-type]
        request_id = raw.headers["x-request-id"]
        world.receipt(request_id)
        with world.as_user() as api:
            made = api.post(
                "/api/payments/orders",
                json={"bucket": "routed", "amount": "10", "provider": "sandbox"},
            )
            order_id = made.json()["id"]
            api.post(f"/sandbox/checkout/{order_id}/pay")
        mallory = world.new_user(credit=1_000_000_000)
        mine, _ = world.new_key(mallory, label="mallory-key")
        sign_in(b, mallory.email)

        # see: another user's receipt, order and post-payment panel are not found
        b.go(f"/receipts/{request_id}")
        self._refused(b, "404", "Routed balance", "tg-chat", "Charge")
        b.go(f"/orders/{order_id}")
        self._refused(b, "404", "¥10.00", "Credited")
        b.go(f"/?order={order_id}")
        self._refused(b, "404", "¥10.00", "arrived")

        # act: revoking another user's key through my own form with its id changed
        b.go("/keys")
        b.driver.execute_script(
            "var f = document.querySelector(arguments[0]);"
            "f.removeAttribute('data-confirm'); f.action = arguments[1]; f.submit();",
            f"form[action='/keys/{mine}/revoke']",
            f"/keys/{world.key_id}/revoke",
        )
        self._refused(b, "404")
        with world.openai() as client:  # the owner's key still works
            assert client.chat.completions.create(model=ROUTED_CHAT, messages=HI).choices  # type: ignore[arg-type]

        # a form whose CSRF token is not the session's is refused, and does nothing
        b.go("/keys")
        b.fill("#label", "forged-key")
        b.driver.execute_script(
            "document.querySelector(\"form[action='/keys'] input[name=csrf_token]\").value"
            " = 'forged';"
        )
        b.find("form[action='/keys'] button[type=submit]").click()
        page = self._refused(b, "403")
        assert "did not come from Tallygate" in page
        b.go("/keys")
        assert "forged-key" not in b.text("main") and "mallory-key" in b.text("main")

        # bad input: readable refusals
        for path in (
            "/receipts?since=someday",
            "/receipts?cursor=abc",
            "/receipts?status=gone",
            "/ledger?bucket=gold",
            "/orders/x",
            "/?order=no-such-order",
        ):
            b.go(path)
            page = self._refused(b, "4")
            assert "Back to Tallygate" in page
