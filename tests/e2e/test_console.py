"""The console in a real headless Chromium (Debian's), against a real server on loopback with
PostgreSQL: a newcomer's journey, and every page as a user and as an operator with no console
error, no failed request and nothing requested from outside 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from selenium import webdriver
from selenium.webdriver.support.ui import Select

from tallygate.users import repository as users_repo
from tallygate.web.render import money
from tests.fixtures.browser import Browser
from tests.fixtures.factories import PASSWORD
from tests.fixtures.gateway import ROUTED_CHAT, World, WorldFactory

HI = [{"role": "user", "content": "hello from the browser test"}]


@pytest.fixture
def browser(chromium: webdriver.Chrome, world: World) -> Iterator[Browser]:
    b = Browser(chromium, world.base_url)
    yield b
    b.collect()
    assert b.outside_requests() == [], "a page requested something outside 127.0.0.1"


def sign_in(b: Browser, email: str, password: str = PASSWORD) -> None:
    b.go("/login")
    b.fill("#email", email)
    b.fill("#password", password)
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
    def test_sign_up_wallet_key_request_receipt(self, browser: Browser, world: World) -> None:
        b = browser
        b.go("/signup")
        b.fill("#email", "newcomer@example.com")
        b.fill("#password", PASSWORD)
        b.submit("main button[type=submit]")
        assert b.driver.current_url.endswith("/?welcome=1")
        body = b.text("main")
        assert "Credit" in body and "Routed balance" in body
        with world.db.read() as conn:
            row = users_repo.user_by_email(conn, "newcomer@example.com")
        assert row is not None
        user_id = int(row["id"])
        world.make.topup(user_id, 20_000_000_000, bucket="credit")
        world.make.topup(user_id, 50_000_000_000, bucket="routed")
        b.go("/")
        assert b.text("[data-testid=balance-credit]") == "$20.00"
        assert b.text("[data-testid=balance-routed]") == "¥50.00"
        b.screenshot("wallet")

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

        b.go("/playground")
        Select(b.find("#model")).select_by_value(ROUTED_CHAT)
        b.fill("#api_key", key)
        b.fill("#message", "hello from the browser test")
        b.submit("form[action='/playground'] button[type=submit]")
        assert b.text("[data-testid=answer]")
        link = b.find("#pr-h a").get_attribute("href") or ""
        request_id = link.rsplit("/", 1)[1]
        charge = int(world.receipt(request_id)["charge_nanos"])
        assert b.text("[data-testid=playground-charge]") == money(charge, "CNY")
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
        assert b.text("[data-testid=balance-routed]") == money(50_000_000_000 - charge, "CNY")
        assert b.text("[data-testid=balance-credit]") == "$20.00"
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
        b.go(f"/?order={order}")
        post = b.text("#post-payment")
        assert "¥10.00 arrived in your Routed balance" in post
        assert "ready to use" in post
        b.screenshot("post-payment")
        b.find("#post-payment a[href^='/ledger']").click()
        b.collect()
        entry = b.driver.current_url.rsplit("#entry-", 1)[1]
        assert "+¥10.00" in b.text(f"#entry-{entry}")
        assert b.console_errors == [] and b.failed == [] and b.outside_requests() == []


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
        } <= set(routes)

        sign_in(browser, world.user.email)
        self._visit(browser, world, user_pages, "user", request_id=request_id, order_id=order_id)
        browser.go("/operator")
        assert "operators only" in browser.text("body")
        browser.collect()
        assert any("403" in e for e in browser.failed + browser.console_errors)
        browser.failed.clear()  # that 403 was the point
        browser.console_errors.clear()

        browser.driver.delete_all_cookies()
        sign_in(browser, world.operator.email)
        # the operator's own pages, minus a receipt (an operator has none of their own)
        mine = [p for p in routes if "{request_id}" not in p and "{order_id}" not in p]
        self._visit(browser, world, mine, "operator", user_id=str(world.user.id))
