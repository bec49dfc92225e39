"""``tallygate research`` against a live server (both databases): it starts a run with an API
key, prints each step as it happens, saves the report; a refused run prints the server's reason
(with the estimate) and exits 1."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tallygate.cli.main import app
from tallygate.kit.money import to_decimal_string
from tallygate.research.data import load_sample
from tallygate.research.runs import to_csv
from tests.fixtures.gateway import World


def test_a_run_is_followed_and_its_report_saved(world: World, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    csv = tmp_path / "prices.csv"
    csv.write_text(to_csv(load_sample("two-tickers")))
    result = CliRunner().invoke(
        app,
        [
            "research",
            "Compare the two tickers",
            "--model",
            "tg-chat:official",
            "--budget",
            "1",
            "--server",
            world.base_url,
            "--token",
            world.key,
            "--csv",
            str(csv),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("research run rr_")
    assert any("draft: done" in line for line in lines)
    assert lines[-1].startswith("done: ") and str(out) in lines[-1]
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "Research support, not financial advice." in html
    receipts = [r for r in world.receipts() if r["project"] == "research"]
    total = sum(int(r["charge_nanos"]) for r in receipts)
    assert receipts and f"done: {to_decimal_string(total)} USD spent" in lines[-1]


def test_a_refused_run_prints_the_reason_and_exits_1(world: World, tmp_path: Path) -> None:
    poor = world.new_user(credit=1000)
    _, key = world.new_key(poor)
    result = CliRunner().invoke(
        app,
        [
            "research",
            "q",
            "--model",
            "tg-chat:official",
            "--budget",
            "1",
            "--server",
            world.base_url,
            "--token",
            key,
            "--out",
            str(tmp_path / "r.md"),
        ],
    )
    assert result.exit_code == 1
    assert "estimated cost" in result.output and "HTTP 402" in result.output
    assert not (tmp_path / "r.md").exists()
    assert world.receipts(poor) == []
