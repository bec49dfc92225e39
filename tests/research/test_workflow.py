"""The research workflow on the gateway world (both databases): every step is a gateway request
billed like any other; the report's facts are the computed facts, its charts exist, and its total
is the sum of its receipts and of their ledger entries; the self-check flags exactly the figure
that matches no fact; the budget cap stops a run and keeps the partial report; a run the balance
cannot pay, or with malformed data, is refused up front and charges nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tallygate.research import demo_reply
from tallygate.research.data import load_sample
from tallygate.research.facts import compute_facts
from tests.fixtures.gateway import START_BALANCE, World
from tests.research.helpers import research_rows, run_to_end, start


def _receipts_of(world: World, run: dict[str, Any]) -> list[dict[str, Any]]:
    ids = {s["request_id"] for s in run["steps"]}
    return [r for r in world.receipts() if r["request_id"] in ids]


class TestSampleRun:
    def test_the_report_has_the_facts_charts_and_a_total_equal_to_receipts_and_ledger(
        self, world: World
    ) -> None:
        run, report = run_to_end(world)
        data = load_sample("two-tickers")
        assert run["status"] == "done", run
        names = [s["name"] for s in run["steps"]]
        assert names == [
            "plan",
            *(f"analyse:{s}" for s in data.symbols()),
            *(["compare"] if len(data.symbols()) > 1 else []),
            "draft",
        ]
        # the facts table is the facts, in order
        expected = [dataclasses.asdict(f) for f in compute_facts(data)]
        assert report["facts"] == expected
        # charts: price, drawdown and volatility for every symbol
        assert report["charts"] == sorted(
            f"{kind}:{s}" for s in data.symbols() for kind in ("price", "drawdown", "volatility")
        )
        assert [c["symbol"] for c in report["coverage"]] == data.symbols()
        # cost: every step is a receipt of the research key; total = Σ receipts = Σ ledger
        receipts = _receipts_of(world, run)
        assert len(receipts) == len(run["steps"])
        assert all(r["project"] == "research" for r in receipts)
        assert all(r["key_label"] == f"research {run['id']}" for r in receipts)
        assert all(r["status"] == "ok" for r in receipts), receipts
        total = sum(int(r["charge_nanos"]) for r in receipts)
        assert total > 0
        assert report["total_nanos"] == total == run["spent_nanos"]
        assert sum(c["charge_nanos"] for c in report["costs"]) == total
        assert sum(world.user_debit(r["entry_id"]) for r in receipts) == total
        assert report["ledger_nanos"] == total
        assert world.balance(bucket="credit") == START_BALANCE - total
        assert total <= run["budget_nanos"]
        # the demo upstream cites the facts exactly: the self-check passes
        assert report["selfcheck"]["ok"] is True
        assert report["selfcheck"]["citations"], "the demo analysis cites figures"
        assert "Research support, not financial advice" in report["disclaimer"]
        # the run's key was revoked when it ended
        keys = [k for k in research_rows(world, "api_keys") if k["project"] == "research"]
        assert len(keys) == 1 and keys[0]["revoked_at"] is not None


class TestSelfCheck:
    def test_one_wrong_figure_among_five_right_ones_is_flagged(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        facts = [
            f for f in compute_facts(load_sample("two-tickers")) if f.unit in ("percent", "price")
        ]
        right = facts[:5]
        wrong_fact = facts[0]
        wrong = "987.65" if wrong_fact.unit == "price" else "87.65%"
        assert all(f.display != wrong for f in compute_facts(load_sample("two-tickers")))

        def draft(question: str, given: list[Any]) -> str:
            lines = [f"{f.symbol} {f.label}: {f.display}." for f in right]
            lines.append(f"{wrong_fact.symbol} {wrong_fact.label}: {wrong}.")
            return "\n".join(lines)

        monkeypatch.setattr(demo_reply, "draft_text", draft)
        run, report = run_to_end(world)
        assert run["status"] == "done"
        flagged = [c for c in report["selfcheck"]["citations"] if not c["ok"]]
        assert [c["text"] for c in flagged] == [wrong]
        assert flagged[0]["note"]
        assert report["selfcheck"]["ok"] is False
        matched = {c["matched"] for c in report["selfcheck"]["citations"] if c["ok"]}
        assert {f.key for f in right} <= matched
        with world.as_user() as client:
            md = client.get(f"/api/research/runs/{run['id']}/report.md").text
        assert "MISMATCH" in md and wrong in md


class TestBudgetCap:
    def test_the_cap_stops_the_run_and_keeps_the_partial_report(self, world: World) -> None:
        with world.as_user() as client:
            estimate = client.post(
                "/api/research/estimate",
                json={"question": "q", "model": "tg-chat:official", "budget": "1"},
            ).json()
        # the low end assumes short answers and no notes: the compare and draft steps, which
        # carry the earlier answers, cannot fit in it
        budget = estimate["estimate_low_nanos"]
        run, report = run_to_end(world, budget=f"0.{budget:09d}", question="q")
        assert run["status"] == "stopped", run
        assert "budget cap" in run["stop_reason"]
        names = [s["name"] for s in run["steps"]]
        assert "draft" not in names and names[0] == "plan"
        assert all(s["status"] == "done" for s in run["steps"])
        receipts = _receipts_of(world, run)
        total = sum(int(r["charge_nanos"]) for r in receipts)
        assert total == run["spent_nanos"] == report["total_nanos"] <= budget
        assert sum(world.user_debit(r["entry_id"]) for r in receipts) == total
        # every hold fitted in what was left of the budget
        assert sum(int(r["hold_nanos"]) for r in receipts) <= budget + sum(
            int(r["hold_nanos"]) - int(r["charge_nanos"]) for r in receipts[:-1]
        )
        assert report["analysis"], "the partial report keeps what the finished steps wrote"
        assert world.balance(bucket="credit") == START_BALANCE - total

    def test_a_failed_step_keeps_the_partial_report_and_charges_only_what_was_used(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        symbols = load_sample("two-tickers").symbols()
        first, second = symbols[0], symbols[1]
        real = demo_reply.analyse_text

        def analyse(symbol: str, facts: list[Any]) -> str:
            if symbol == second:  # the upstream (both channels) breaks on this step
                raise RuntimeError("upstream crashed")
            return real(symbol, facts)

        monkeypatch.setattr(demo_reply, "analyse_text", analyse)
        run, report = run_to_end(world)
        assert run["status"] == "failed", run
        assert f"analyse:{second}" in run["stop_reason"]
        assert [(s["name"], s["status"]) for s in run["steps"]] == [
            ("plan", "done"),
            (f"analyse:{first}", "done"),
            (f"analyse:{second}", "failed"),
        ]
        receipts = _receipts_of(world, run)
        assert [r["status"] for r in receipts][:2] == ["ok", "ok"]
        assert int(receipts[2]["charge_nanos"]) == 0
        total = sum(int(r["charge_nanos"]) for r in receipts)
        assert total > 0
        assert total == run["spent_nanos"] == report["total_nanos"] == report["ledger_nanos"]
        assert world.balance(bucket="credit") == START_BALANCE - total
        assert report["analysis"].startswith(f"[analyse:{first}]")


class TestRefusedUpFront:
    def test_too_little_balance_is_refused_with_the_estimate_and_nothing_charged(
        self, world: World
    ) -> None:
        poor = world.new_user(credit=1000)
        with world.as_user(poor) as client:
            refused = start(client)
        assert refused.status_code == 402, refused.text
        error = refused.json()["error"]
        assert error["code"] == "insufficient_balance"
        details = error["details"]
        assert details["estimate_low_nanos"] > 1000
        assert details["estimate_high_nanos"] >= details["estimate_low_nanos"]
        assert details["currency"] == "USD"
        assert "estimated cost" in error["message"]
        assert world.receipts(poor) == []
        assert world.balance(poor) == 1000
        assert research_rows(world, "research_runs") == []
        assert [k for k in research_rows(world, "api_keys") if k["project"] == "research"] == []

    @pytest.mark.parametrize(
        ("csv", "problem"),
        [
            ("date,open,high,low\n2026-01-02,1,2,1\n2026-01-05,1,2,1\n", "close"),
            (
                "date,open,high,low,close,volume\n2026-13-45,1,2,1,1.5,10\n"
                "2026-01-05,1,2,1,1.5,10\n",
                "date",
            ),
            (
                "date,open,high,low,close,volume\n2026-01-02,1,2,1,abc,10\n"
                "2026-01-05,1,2,1,1.5,10\n",
                "close",
            ),
            ("date,open,high,low,close,volume\n2026-01-02,1,2,1,1.5,10\n", "row"),
        ],
        ids=["missing-columns", "bad-date", "non-numeric-price", "one-row"],
    )
    def test_malformed_csv_is_refused_naming_the_problem(
        self, world: World, csv: str, problem: str
    ) -> None:
        with world.as_user() as client:
            refused = client.post(
                "/api/research/runs",
                json={
                    "question": "q",
                    "model": "tg-chat:official",
                    "budget": "1",
                    "files": [{"name": "prices.csv", "text": csv}],
                },
            )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid_market_data"
        assert error["message"].startswith("prices.csv: ")
        assert problem in error["message"].lower()
        assert world.receipts() == []
        assert world.balance() == START_BALANCE
        assert research_rows(world, "research_runs") == []


class TestPrivacy:
    def test_another_user_cannot_read_my_run(self, world: World) -> None:
        run, _ = run_to_end(world)
        other = world.new_user(credit=START_BALANCE)
        with world.as_user(other) as client:
            for path in ("", "/events", "/report", "/report.md", "/report.html"):
                answer = client.get(f"/api/research/runs/{run['id']}{path}")
                assert answer.status_code == 404, (path, answer.text)
                assert run["question"] not in answer.text
            assert client.get("/api/research/runs").json()["data"] == []
