"""The report of a run: question, data coverage, charts, facts table, analysis, self-check,
cost breakdown (each step with its receipt) and the disclaimer — as one ``Report`` that the page,
the Markdown file and the standalone HTML file all render.

The facts and charts are recomputed from the run's stored data (deterministic); the self-check is
the one stored when the run ended. The total is the sum of the step receipts' charges, and
``ledger_nanos`` is what those receipts' ledger entries took from the user (they agree)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping

from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import to_decimal_string
from tallygate.research import repository as repo
from tallygate.research import runs
from tallygate.research.charts import charts
from tallygate.research.data import Coverage
from tallygate.research.facts import CONVENTIONS, Fact, compute_facts

DISCLAIMER = "Research support, not financial advice."


@dataclass(frozen=True, slots=True)
class CostLine:
    step: str
    status: str
    request_id: str | None
    input_tokens: int
    output_tokens: int
    charge_nanos: int
    receipt_url: str | None


@dataclass(frozen=True, slots=True)
class Report:
    run: dict[str, Any]
    coverage: list[Coverage]
    charts: dict[str, str]
    facts: list[Fact]
    conventions: dict[str, str]
    analysis: str
    selfcheck: dict[str, Any] | None
    costs: list[CostLine]
    total_nanos: int
    ledger_nanos: int
    currency: str
    disclaimer: str = DISCLAIMER

    @property
    def flagged(self) -> list[dict[str, Any]]:
        if not self.selfcheck:
            return []
        return [c for c in self.selfcheck["citations"] if not c["ok"]]

    def money(self, nanos: int) -> str:
        """Exact: every nano-unit shown (never rounded)."""
        return f"{to_decimal_string(nanos)} {self.currency}"


def build(conn: Connection, run: RowMapping) -> Report:
    view = runs.run_view(conn, run)
    data = runs.data_of(run)
    facts = compute_facts(data)
    steps = repo.steps(conn, str(run["id"]))
    request_ids = [str(s["request_id"]) for s in steps if s["request_id"]]
    receipts = {str(r["request_id"]): r for r in repo.receipts(conn, request_ids)}
    costs = []
    for s in steps:
        rec = receipts.get(str(s["request_id"])) if s["request_id"] else None
        costs.append(
            CostLine(
                step=str(s["name"]),
                status=str(s["status"]),
                request_id=s["request_id"],
                input_tokens=int(rec["input_tokens"]) if rec else 0,
                output_tokens=int(rec["output_tokens"]) if rec else 0,
                charge_nanos=int(rec["charge_nanos"]) if rec else 0,
                receipt_url=f"/receipts/{s['request_id']}" if s["request_id"] else None,
            )
        )
    entries = [int(r["entry_id"]) for r in receipts.values() if r["entry_id"] is not None]
    selfcheck = orjson.loads(run["selfcheck_json"]) if run["selfcheck_json"] else None
    return Report(
        run=view,
        coverage=data.coverage(),
        charts=charts(data),
        facts=facts,
        conventions=dict(CONVENTIONS),
        analysis=str(run["analysis"]),
        selfcheck=selfcheck,
        costs=costs,
        total_nanos=sum(c.charge_nanos for c in costs),
        ledger_nanos=repo.ledger_debits(conn, int(run["user_id"]), entries),
        currency=str(run["currency"]),
    )


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: Report) -> str:
    run = report.run
    lines = [
        f"# Research: {run['question']}",
        "",
        f"_{report.disclaimer}_",
        "",
        f"- Run: {run['id']} ({run['status']}"
        + (f": {run['stop_reason']}" if run["stop_reason"] else "")
        + ")",
        f"- Model: {run['model']}:{run['route_type']} (paid from the {run['bucket']} bucket)",
        f"- Data: {run['data_source']}",
        f"- Started: {from_epoch_us(run['created_at']).isoformat()}",
        "",
        "## Data coverage",
        "",
        "| Symbol | First | Last | Rows |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c.symbol} | {c.first} | {c.last} | {c.rows} |" for c in report.coverage]
    lines += ["", "## Charts", ""]
    lines += [f"- {name} (SVG in the HTML report)" for name in report.charts]
    lines += ["", "## Facts", "", "| Key | Fact | Value | Convention |", "|---|---|---|---|"]
    lines += [
        f"| {_cell(f.key)} | {_cell(f.label)} | {_cell(f.display)} | {_cell(f.convention)} |"
        for f in report.facts
    ]
    lines += ["", "### Conventions", ""]
    lines += [f"- **{name}**: {text}" for name, text in report.conventions.items()]
    lines += ["", "## Analysis", "", report.analysis or "_(no analysis: the run stopped first)_"]
    lines += ["", "## Self-check", ""]
    if report.selfcheck is None:
        lines.append("Not run (no analysis).")
    else:
        total = len(report.selfcheck["citations"])
        flagged = report.flagged
        lines.append(
            f"{total} figure(s) cited; "
            + (f"{len(flagged)} do not match a computed fact:" if flagged else "all match.")
        )
        lines += [f"- **MISMATCH** `{c['text']}`: {c['note']}" for c in flagged]
    lines += [
        "",
        "## Cost",
        "",
        f"Budget cap {report.money(run['budget_nanos'])}; estimate "
        f"{report.money(run['estimate_low_nanos'])} to {report.money(run['estimate_high_nanos'])}.",
        "",
        "| Step | Status | Input tokens | Output tokens | Charge | Receipt |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.step} | {c.status} | {c.input_tokens} | {c.output_tokens} | "
        f"{report.money(c.charge_nanos)} | {c.request_id or '—'} |"
        for c in report.costs
    ]
    lines += [
        "",
        f"**Total: {report.money(report.total_nanos)}** "
        f"({to_decimal_string(report.total_nanos)} {report.currency}; the sum of the receipts, "
        "equal to their ledger entries).",
        "",
        f"_{report.disclaimer}_",
        "",
    ]
    return "\n".join(lines)
