"""The research assistant in a real headless Chromium: sign in, start a run on the shipped
sample, watch its progress arrive step by step on the run's page, then read the report (facts
table, charts, self-check, a receipt link per step) — with no console error, no failed request
and nothing requested outside 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tallygate.research.data import load_sample
from tallygate.research.facts import compute_facts
from tallygate.research.report import DISCLAIMER
from tallygate.web.render import money
from tests.e2e.test_console import sign_in
from tests.fixtures.browser import Browser
from tests.fixtures.gateway import OFFICIAL_CHAT, ROUTED_CHAT, START_BALANCE, World

STEP_DELAY_SECONDS = 0.6
"""Each model step waits this long at the upstream, so the run takes a few seconds to watch."""


@pytest.fixture
def browser(chromium: webdriver.Chrome, world: World) -> Iterator[Browser]:
    b = Browser(chromium, world.base_url)
    yield b
    b.collect()
    assert b.outside_requests() == [], "a page requested something outside 127.0.0.1"


def _arrive(b: Browser, path: str) -> None:
    """Wait until a clicked link's page has replaced this one and finished loading."""
    WebDriverWait(b.driver, 20).until(
        lambda d: (
            d.current_url.endswith(path)
            and d.execute_script("return document.readyState") == "complete"
        )
    )
    b.collect()


def _progress(driver: webdriver.Chrome) -> list[str]:
    items = driver.find_elements(By.CSS_SELECTOR, "[data-testid=progress] li")
    return [str(i.get_attribute("data-kind")) for i in items]


class TestResearchRun:
    def test_start_a_run_watch_its_progress_and_open_the_report(
        self, browser: Browser, world: World
    ) -> None:
        b = browser
        world.primary.fault("fixed_delay", delay=STEP_DELAY_SECONDS)
        sign_in(b, world.user.email)
        b.find("nav a[href='/research']").click()
        _arrive(b, "/research")
        assert b.text("[data-testid=disclaimer]") == DISCLAIMER
        assert "between" in b.text("[data-testid=estimate]")
        assert not b.driver.find_elements(By.CSS_SELECTOR, "[data-testid=low-balance]")
        # the estimate follows the model chosen: the routed route is paid from the Routed balance
        for model, paid_from in ((ROUTED_CHAT, "Routed balance"), (OFFICIAL_CHAT, "Credit")):
            Select(b.find("#model")).select_by_value(model)
            WebDriverWait(b.driver, 10, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d, paid_from=paid_from: (
                    f"paid from your {paid_from}"
                    in d.find_element(By.CSS_SELECTOR, "[data-testid=estimate]").text
                )
            )
        assert "$" in b.text("[data-testid=estimate-low]")
        Select(b.find("#sample")).select_by_value("two-tickers")
        b.fill("#budget", "1")
        b.screenshot("research-form")
        b.submit("button[value=start]")

        # the run's page: progress arrives in place (no reload) while the run goes on
        assert "/research/rr_" in b.driver.current_url
        run_id = b.driver.current_url.rsplit("/", 1)[1]
        assert b.find("[data-research-run]").get_attribute("data-finished") == "false"
        b.driver.execute_script("window.tallygateSamePage = true;")
        seen = len(_progress(b.driver))
        WebDriverWait(b.driver, 30, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: (
                d.execute_script("return window.tallygateSamePage === true;")
                and "step_done" in _progress(d)
                and len(_progress(d)) > seen
            )
        )
        assert b.text("[data-testid=spent]").startswith("$")
        assert b.text("[data-testid=run-status]") == "running"
        b.screenshot("research-progress")

        # when it ends, the page shows the report
        WebDriverWait(b.driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=facts]")
        )
        b.collect()
        assert b.text("[data-testid=run-status]") == "done"
        assert "finished" in _progress(b.driver)
        facts = b.driver.find_elements(By.CSS_SELECTOR, "[data-testid=facts] tbody tr")
        expected = compute_facts(load_sample("two-tickers"))
        assert [f.get_attribute("data-fact") for f in facts] == [f.key for f in expected]
        charts = b.driver.find_elements(By.CSS_SELECTOR, "[data-testid=charts] figure svg")
        assert len(charts) == 6 and all(c.size["width"] > 100 for c in charts)
        assert "every one matches a computed fact" in b.text("[data-testid=selfcheck]")
        links = b.driver.find_elements(By.CSS_SELECTOR, "[data-testid=costs] a[href^='/receipts/']")
        receipts = [r for r in world.receipts() if r["project"] == "research"]
        assert sorted(str(a.get_attribute("href")).rsplit("/", 1)[1] for a in links) == sorted(
            str(r["request_id"]) for r in receipts
        )
        total = sum(int(r["charge_nanos"]) for r in receipts)
        assert b.text("[data-testid=total]") == money(total, "USD")
        assert b.text("[data-testid=spent]") == money(total, "USD")
        assert DISCLAIMER in b.text("#report")
        download = str(b.find("[data-testid=download-md]").get_attribute("href"))
        assert download.endswith(f"/api/research/runs/{run_id}/report.md")
        b.screenshot("research-report")

        # a step's receipt opens from the cost table
        request_id = str(links[0].get_attribute("href")).rsplit("/", 1)[1]
        charge = next(int(r["charge_nanos"]) for r in receipts if r["request_id"] == request_id)
        links[0].click()
        _arrive(b, f"/receipts/{request_id}")
        assert b.text("[data-testid=charge]") == money(charge, "USD")

        b.go("/")
        assert b.text("[data-testid=balance-credit]") == money(START_BALANCE - total, "USD")
        b.go("/research")
        assert run_id in b.text("[data-testid=runs]")
        assert b.console_errors == [], b.console_errors
        assert b.failed == [], b.failed


class TestMalformedUpload:
    def test_a_malformed_csv_is_named_when_chosen_and_starting_it_charges_nothing(
        self, browser: Browser, world: World, tmp_path: Path
    ) -> None:
        b = browser
        bad = tmp_path / "prices.csv"
        bad.write_text("date,symbol,open,close\n2026-01-02,ACME,1,1\n2026-01-05,ACME,1,1\n")
        sign_in(b, world.user.email)
        b.go("/research")
        b.find("#files").send_keys(str(bad))
        # the estimate asked for in place names the problem at once
        WebDriverWait(b.driver, 10, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=research-error]")
        )
        message = "prices.csv: missing columns: high, low, volume"
        assert b.text("[data-testid=research-error]").startswith(message)
        assert b.driver.current_url.endswith("/research")
        b.submit("button[value=start]")
        assert b.text("[data-testid=research-error]").startswith(message)
        assert "Traceback" not in b.driver.page_source
        b.screenshot("research-malformed-csv")
        assert world.receipts() == [] and world.balance(bucket="credit") == START_BALANCE
        b.collect()
        assert b.console_errors == [] or all("400" in e for e in b.console_errors)
        assert b.failed and all(f.startswith("400 ") for f in b.failed)  # the refusals
