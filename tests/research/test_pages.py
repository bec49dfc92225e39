"""The research pages (both databases): the start form shows the samples, the models I can use,
the estimate and the disclaimer; a run started from it on the sample lands on its page, whose
report has the facts table, the charts, the self-check and a total equal to the sum of its
receipts (each linked); malformed data, a cap that is not a number, too little balance and a
form without its CSRF token are refused on the form with the problem named and nothing charged;
another user's run is not found."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest

from tallygate.research.data import load_sample
from tallygate.research.facts import compute_facts
from tallygate.research.report import DISCLAIMER
from tallygate.research.runs import to_csv
from tallygate.users.service import User
from tallygate.web.render import money
from tallygate.web.research import EXAMPLE_QUESTION
from tests.fixtures.gateway import OFFICIAL_CHAT, START_BALANCE, World
from tests.research.helpers import QUESTION, research_rows, wait
from tests.web.helpers import csrf_of, session_client

EMPTY_FILE_INPUT = ("files", ("", b"", "application/octet-stream"))
"""What a browser sends for a file input left empty."""
GOOD = "date,symbol,open,high,low,close,volume\n2026-01-02,ACME,10,11,9,10.5,100\n"
GOOD += "2026-01-05,ACME,10.5,12,10,11,120\n"


def _client(world: World, user: User | None = None) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(user or world.user))


def _post(
    client: httpx.Client,
    *,
    csv: str | None = None,
    action: str = "start",
    csrf: bool = True,
    **fields: str,
) -> httpx.Response:
    """Post the start form as a browser does (multipart, the file input always sent)."""
    data = {"question": QUESTION, "sample": "two-tickers", "model": OFFICIAL_CHAT, "budget": "1"}
    data.update(fields, action=action)
    if csrf:
        data["csrf_token"] = csrf_of(client.get("/research"))
    upload = ("files", ("prices.csv", csv.encode(), "text/csv")) if csv else EMPTY_FILE_INPUT
    return client.post("/research", data=data, files=[upload])


def _alert(page: httpx.Response) -> str:
    found = re.search(r'data-testid="research-error">([^<]*)<', page.text)
    assert found, page.text
    return html.unescape(found.group(1))


def _nothing_charged(world: World, entries_before: int, user: User | None = None) -> None:
    """No ledger entry, receipt, run or run key was written (the balance: by the caller)."""
    assert len(research_rows(world, "entries")) == entries_before
    assert world.receipts(user) == []
    assert research_rows(world, "research_runs") == []
    assert [k for k in research_rows(world, "api_keys") if k["project"] == "research"] == []


class TestStartForm:
    def test_it_shows_the_samples_models_estimate_and_disclaimer(self, world: World) -> None:
        with _client(world) as client:
            form = client.get("/research")
            model = re.search(
                r'<option value="([^"]+)" selected>', form.text.split('id="model"')[1]
            )
            assert model is not None
            estimate = client.post(
                "/api/research/estimate",
                json={"question": EXAMPLE_QUESTION, "model": model.group(1), "budget": "1"},
            ).json()
        assert form.status_code == 200
        assert 'value="two-tickers"' in form.text and "ACME and BOLT" in form.text
        assert "tg-chat:official" in form.text and "tg-chat:routed" in form.text
        assert f'data-testid="disclaimer">{DISCLAIMER}<' in form.text
        low = money(estimate["estimate_low_nanos"], estimate["currency"])
        high = money(estimate["estimate_high_nanos"], estimate["currency"])
        assert f'data-testid="estimate-low">{low}<' in form.text
        assert f'data-testid="estimate-high">{high}<' in form.text
        # the cap suggested is the high end, so a run started as offered fits in it
        assert f'name="budget" inputmode="decimal" value="{estimate["estimate_high"]}"' in form.text
        assert 'data-testid="low-balance"' not in form.text
        assert "No runs yet." in form.text

    def test_estimate_cost_shows_the_estimate_for_what_was_entered_and_starts_nothing(
        self, world: World
    ) -> None:
        with _client(world) as client:
            shown = _post(client, action="estimate", model="tg-chat:routed", budget="0.5")
            estimate = client.post(
                "/api/research/estimate",
                json={"question": QUESTION, "model": "tg-chat:routed", "budget": "0.5"},
            ).json()
        assert shown.status_code == 200
        assert estimate["currency"] == "CNY"
        low = money(estimate["estimate_low_nanos"], "CNY")
        assert f'data-testid="estimate-low">{low}<' in shown.text
        assert "Routed balance" in shown.text
        assert research_rows(world, "research_runs") == []


class TestStartingARun:
    def test_a_sample_run_lands_on_its_page_and_the_report_adds_up(self, world: World) -> None:
        with _client(world) as client:
            started = _post(client)
            assert started.status_code == 303, started.text
            target = started.headers["location"]
            run_id = target.rsplit("/", 1)[1]
            assert re.fullmatch(r"/research/rr_[0-9a-f]{24}", target)
            run = wait(client, run_id)  # the API takes the page's session cookie
            page = client.get(target)
            listing = client.get("/research")
        assert run["status"] == "done", run
        assert page.status_code == 200
        text = page.text
        assert 'data-finished="true"' in text and 'data-testid="run-status">done<' in text
        # the facts table: every computed fact, as displayed
        for fact in compute_facts(load_sample("two-tickers")):
            assert f'data-fact="{fact.key}"' in text
            assert f'<td class="num">{html.escape(fact.display)}</td>' in text
        # the charts: price, drawdown and volatility of both symbols, inline
        assert text.count("<svg") == 6 and 'data-chart="price:ACME"' in text
        assert "every one matches a computed fact" in text
        # the cost: one receipt per step, each linked; the total is their sum
        receipts = [r for r in world.receipts() if r["project"] == "research"]
        assert len(receipts) == len(run["steps"]) > 0
        for receipt in receipts:
            assert f'href="/receipts/{receipt["request_id"]}"' in text
        total = sum(int(r["charge_nanos"]) for r in receipts)
        assert f'data-testid="total">{money(total, "USD")}<' in text
        spent = f'data-testid="spent" data-symbol="$" data-currency="USD">{money(total, "USD")}<'
        assert spent in text
        assert world.balance(bucket="credit") == START_BALANCE - total
        assert text.count(DISCLAIMER) >= 2
        # the progress, step by step
        for step in run["steps"]:
            assert f"{step['name']}: done" in text
        # my runs list it with its cost against its cap
        assert f'<a href="/research/{run_id}">{run_id}</a>' in listing.text
        assert f"{money(total, 'USD')} / {money(10**9, 'USD')}" in listing.text

    def test_the_downloads_are_the_report_with_the_disclaimer(self, world: World) -> None:
        with _client(world) as client:
            run_id = _post(client).headers["location"].rsplit("/", 1)[1]
            wait(client, run_id)
            page = client.get(f"/research/{run_id}").text
            links = re.findall(r'href="(/api/research/runs/[^"]+)" data-testid="download-', page)
            md, report = (client.get(link) for link in links)
        assert links == [
            f"/api/research/runs/{run_id}/report.md",
            f"/api/research/runs/{run_id}/report.html",
        ]
        assert md.status_code == report.status_code == 200
        assert md.headers["content-type"].startswith("text/markdown")
        assert md.headers["content-disposition"] == f'attachment; filename="{run_id}.md"'
        assert md.text.startswith(f"# Research: {QUESTION}") and DISCLAIMER in md.text
        assert report.headers["content-type"].startswith("text/html")
        assert report.text.startswith("<!doctype html>") and DISCLAIMER in report.text
        assert report.text.count("<svg") == 6

    def test_an_uploaded_csv_is_the_data(self, world: World) -> None:
        csv = to_csv(load_sample("two-tickers"))
        with _client(world) as client:
            started = _post(client, csv=csv.replace("ACME", "ZETA"))
            assert started.status_code == 303, started.text
            run = wait(client, started.headers["location"].rsplit("/", 1)[1])
        assert run["status"] == "done" and run["data_source"] == "prices.csv"
        assert any(s["name"] == "analyse:ZETA" for s in run["steps"])


MALFORMED = {
    "missing columns": ("date,symbol,open,close\n2026-01-02,A,1,1\n", "missing columns: high"),
    "a bad date": (GOOD + "02/01/2026,ACME,1,1,1,1,1\n", "row 4: date '02/01/2026'"),
    "a non-numeric price": (GOOD.replace("10.5,100", "ten,100"), "close 'ten' is not a number"),
    "one row": (GOOD.split("2026-01-05")[0], "ACME has only 1 row"),
}


class TestRefusals:
    @pytest.mark.parametrize("case", list(MALFORMED))
    def test_malformed_csv_is_named_on_the_form_and_nothing_is_charged(
        self, world: World, case: str
    ) -> None:
        csv, expected = MALFORMED[case]
        entries = len(research_rows(world, "entries"))
        with _client(world) as client:
            refused = _post(client, csv=csv)
        assert refused.status_code == 400
        assert _alert(refused).startswith("prices.csv: ") and expected in _alert(refused)
        assert "Traceback" not in refused.text
        assert f">{QUESTION}</textarea>" in refused.text  # what was entered stays
        _nothing_charged(world, entries)
        assert world.balance(bucket="credit") == world.balance(bucket="routed") == START_BALANCE

    def test_a_cap_that_is_not_a_number_is_named(self, world: World) -> None:
        entries = len(research_rows(world, "entries"))
        with _client(world) as client:
            refused = _post(client, budget="ten dollars")
        assert refused.status_code == 400
        assert _alert(refused) == "budget is not a number: 'ten dollars'"
        assert 'value="ten dollars"' in refused.text
        _nothing_charged(world, entries)
        assert world.balance(bucket="credit") == world.balance(bucket="routed") == START_BALANCE

    def test_too_little_balance_is_refused_with_the_estimate(self, world: World) -> None:
        poor = world.new_user(credit=1_000)  # a millionth of a dollar
        entries = len(research_rows(world, "entries"))
        with _client(world, poor) as client:
            form = client.get("/research")
            refused = _post(client, budget="1")
        assert 'data-testid="low-balance"' in form.text  # warned before trying
        assert refused.status_code == 402
        message = _alert(refused)
        assert message.startswith("your balance (0.000001 USD available) is below this run's")
        assert "top up first" in message
        assert 'data-testid="estimate-low">' in refused.text
        assert 'data-testid="low-balance"' in refused.text
        assert 'href="/topup?bucket=credit"' in refused.text
        assert world.balance(poor, "credit") == 1_000
        _nothing_charged(world, entries, poor)

    def test_a_cap_below_the_estimate_is_refused_with_the_estimate(self, world: World) -> None:
        entries = len(research_rows(world, "entries"))
        with _client(world) as client:
            refused = _post(client, budget="0.000001")
        assert refused.status_code == 400
        assert _alert(refused).startswith("the budget cap 0.000001 USD is below this run's")
        assert 'data-testid="estimate-low">' in refused.text
        assert 'data-testid="low-balance"' not in refused.text  # the balance is not the problem
        _nothing_charged(world, entries)
        assert world.balance(bucket="credit") == START_BALANCE

    def test_a_form_without_its_csrf_token_is_refused(self, world: World) -> None:
        entries = len(research_rows(world, "entries"))
        with _client(world) as client:
            refused = _post(client, csrf=False)
            forged = _post(client, csrf=False, csrf_token="forged")
        assert refused.status_code == forged.status_code == 403
        assert "did not come from Tallygate" in refused.text
        _nothing_charged(world, entries)
        assert world.balance(bucket="credit") == world.balance(bucket="routed") == START_BALANCE

    def test_signed_out_the_form_goes_to_sign_in(self, world: World) -> None:
        with httpx.Client(base_url=world.base_url) as client:
            answer = client.get("/research")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login?next=%2Fresearch"


class TestRunPage:
    def test_another_users_run_is_not_found(self, world: World) -> None:
        with _client(world) as client:
            run_id = _post(client).headers["location"].rsplit("/", 1)[1]
            wait(client, run_id)
        mallory = world.new_user(credit=10**9)
        with _client(world, mallory) as client:
            page = client.get(f"/research/{run_id}")
            api: dict[str, Any] = {
                path: client.get(f"/api/research/runs/{run_id}{path}").status_code
                for path in ("", "/report", "/report.md", "/report.html")
            }
            listing = client.get("/research").text
        assert page.status_code == 404
        assert QUESTION not in page.text and "<svg" not in page.text
        assert "Traceback" not in page.text
        assert set(api.values()) == {404}
        assert run_id not in listing

    def test_a_malformed_run_id_is_refused(self, world: World) -> None:
        with _client(world) as client:
            answer = client.get("/research/not-a-run")
        assert answer.status_code in (404, 422) and "Traceback" not in answer.text
