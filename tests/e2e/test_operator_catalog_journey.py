"""An operator's catalog journey in a real headless Chromium (Debian's) on PostgreSQL: create a
model, price it and route it through a new channel from the console; a user calls that model
with the official ``openai`` SDK and is billed exactly at that price through that channel; then
the operator creates a campaign, generates codes as a CSV download, a downloaded code
redeems, and every one of those actions is in the audit trail with the operator as its actor."""

from __future__ import annotations

import csv
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.test_console import sign_in
from tests.fixtures.browser import Browser
from tests.fixtures.gateway import Prices, World, expected_charge

MODEL = "journey/model-1"
UPSTREAM_ID = "journey-upstream-id"
PRICE = Prices("official", "credit", "USD", 7_000_000_001, 21_000_000_000, 7_000_000_001)


@pytest.fixture
def browser(chromium: webdriver.Chrome, world: World) -> Iterator[Browser]:
    b = Browser(chromium, world.base_url)
    yield b
    b.collect()
    assert b.outside_requests() == [], "a page requested something outside 127.0.0.1"


def _operator_signs_in(b: Browser, world: World) -> None:
    sign_in(b, world.operator.email, world=world)
    assert not urlsplit(b.driver.current_url).path.startswith("/login"), b.text("main")


def _post(b: Browser, css: str) -> None:
    """Click a submit button and wait until the next page replaced this one."""
    old = b.find("html")
    b.find(css).click()
    WebDriverWait(b.driver, 15).until(staleness_of(old))
    b.collect()


def _id_in(url: str, prefix: str) -> int:
    """The numeric id in a page address such as ``/operator/channels/7?saved=created``."""
    path = urlsplit(url).path
    assert path.startswith(prefix), url
    return int(path.removeprefix(prefix))


def _downloaded(folder: Path, timeout: float = 15.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"nothing was downloaded into {folder}")


class TestOperatorCatalogJourney:
    def test_channel_and_price_bill_a_user_and_codes_download_as_csv(
        self, browser: Browser, world: World
    ) -> None:
        _operator_signs_in(browser, world)

        # a model, and its official price (a new price version)
        browser.go("/operator/models")
        browser.fill("#m-name", MODEL)
        browser.fill("#m-ctx", "64000")
        browser.fill("#m-cap", "512")
        _post(browser, "form[action='/operator/models'] button[type=submit]")
        assert "Model created" in browser.text("main")
        browser.fill("#p-official-in", "7.000000001")
        browser.fill("#p-official-out", "21")
        _post(browser, "form[action$='/offers/official'] button[type=submit]")
        current = browser.text("[data-testid=current-official]")
        assert "$7.000000001" in current and "$21.00" in current
        browser.screenshot("journey-operator-model-priced")

        # a channel that maps it to the upstream's own id
        browser.go("/operator/channels/new")
        browser.fill("#ch-name", "journey")
        browser.fill("#ch-label", "Journey upstream")
        browser.fill("#ch-base", world.primary.base_url)
        browser.fill("#ch-secret", "sk-upstream-test")
        browser.fill("#ch-priority", "100")
        browser.fill("#ch-models", f"{MODEL} = {UPSTREAM_ID}")
        _post(browser, "form[action='/operator/channels'] button[type=submit]")
        assert "Channel created." in browser.text("main")
        channel_id = _id_in(browser.driver.current_url, "/operator/channels/")
        assert "sk-upstream-test" not in browser.driver.page_source
        assert browser.text("[data-testid=secret-state]") == "set"
        _post(browser, "form[action$='/test'] button[type=submit]")
        assert "Test succeeded" in browser.text("[data-testid=test-result]")
        browser.screenshot("journey-operator-channel")

        # the user calls it and pays exactly that price, through that channel
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=f"{MODEL}:official",
                messages=[{"role": "user", "content": "price me, please"}],
            )
        receipt = world.receipt(raw.headers["x-request-id"])
        usage = world.primary.last.usage
        assert world.primary.last.body["model"] == UPSTREAM_ID
        assert receipt["status"] == "ok" and receipt["channel"] == "Journey upstream"
        assert receipt["charge_nanos"] == expected_charge(
            PRICE, usage.prompt_tokens, usage.completion_tokens
        )
        assert receipt["input_per_m_nanos"] == PRICE.input

        # a campaign, and codes generated straight into a CSV download
        browser.go("/operator/campaigns")
        browser.fill("#c-name", "Journey codes")
        browser.fill("#c-amount", "0.50")
        _post(browser, "form[action='/operator/campaigns'] button[type=submit]")
        assert "Campaign created." in browser.text("main")
        campaign_id = _id_in(browser.driver.current_url, "/operator/campaigns/")
        with tempfile.TemporaryDirectory(prefix="tg-downloads-") as folder:
            browser.driver.execute_cdp_cmd(
                "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": folder}
            )
            browser.fill("#g-count", "3")
            browser.fill("#g-prefix", "JOURNEY")
            browser.submit("[data-testid=generate-csv]", navigates=False)
            path = _downloaded(Path(folder))
            rows = list(csv.DictReader(io.StringIO(path.read_text())))
        assert path.name.endswith("-codes.csv")
        assert len(rows) == 3 and all(r["code"].startswith("JOURNEY") for r in rows)
        with world.as_user() as api:
            redeemed = api.post("/api/credits/redeem", json={"code": rows[0]["code"]})
        assert redeemed.status_code == 201, redeemed.text
        assert redeemed.json()["amount"] in ("0.5", "0.50", "0.500000000")
        browser.go(browser.driver.current_url.replace(world.base_url, ""))
        assert browser.text("[data-testid=redemptions]").startswith("1")
        browser.screenshot("journey-operator-campaign")

        # every action above is in the audit trail, by this operator, on its target
        browser.go("/operator/audit?actor=" + world.operator.email)
        for action, target in [
            ("model.create", f"model:{MODEL}"),
            ("price.set", f"model:{MODEL}:official"),
            ("channel.create", f"channel:{channel_id}"),
            ("channel.models", f"channel:{channel_id}"),
            ("campaign.create", f"campaign:{campaign_id}"),
            ("code.generate", f"campaign:{campaign_id}"),
        ]:
            row = browser.find(f"#audit-events tr[data-action='{action}'][data-target='{target}']")
            assert world.operator.email in row.text, (action, row.text)
        browser.screenshot("journey-operator-audit")
        browser.collect()
        assert browser.console_errors == [], browser.console_errors
        assert browser.failed == [], browser.failed
