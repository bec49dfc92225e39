"""Research runs: prepare (facts, estimate, refusals up front), create (with the run's own API
key), read (owner only), progress events and the run's steps.

Functions take the caller's connection and never commit.

A run pays through an API key of its own, minted here with project ``research``, the label
``research <run id>``, only the run's model and route type, and a total spend limit equal to the
budget on the paying bucket — so every step is an ordinary gateway request (hold, receipt, ledger
entry) labelled as research, and the ledger itself refuses a hold past the budget. The key's
secret lives only in the running task's memory; the key is revoked when the run ends."""

from __future__ import annotations

import io
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping

from tallygate.errors import BadRequest, NotFound, PaymentRequired
from tallygate.gateway.snapshot import ModelInfo, Offer, Snapshot
from tallygate.keys import service as keys
from tallygate.keys.schemas import KeyCreate, SpendLimitIn
from tallygate.kit.money import to_decimal_string
from tallygate.ledger import Ledger
from tallygate.research import billing
from tallygate.research import repository as repo
from tallygate.research.data import MarketData, parse_csv
from tallygate.research.facts import Fact, compute_facts

PROJECT = "research"
"""The project of every research run's key, so its receipts are labelled as research."""
MAX_QUESTION = 2000
FINISHED = ("done", "stopped", "failed")
RUN_ID_PATTERN = r"^rr_[0-9a-f]{24}$"
COLUMNS = ("open", "high", "low", "close", "volume")


def exact(nanos: int, currency: str) -> str:
    """An amount as people read it in messages, exact to the nano-unit: ``0.004213 USD``."""
    return f"{to_decimal_string(nanos)} {currency}"


class RunNotFound(NotFound):
    code = "research_run_not_found"


class BudgetBelowEstimate(BadRequest):
    code = "budget_below_estimate"


class BalanceBelowEstimate(PaymentRequired):
    code = "insufficient_balance"


@dataclass(frozen=True, slots=True)
class RunRequest:
    question: str
    model: str
    """A public model name, or an API model id with its route suffix (``name:official``)."""
    route_type: str | None
    budget_nanos: int
    data: MarketData
    source: str
    """What the data came from: the sample's name or the uploaded file names."""


@dataclass(frozen=True, slots=True)
class Prepared:
    request: RunRequest
    model: ModelInfo
    route_type: str
    offer: Offer
    facts: list[Fact]
    steps: list[str]
    estimate: billing.Estimate
    available_nanos: int


def estimate_details(p: Prepared) -> dict[str, Any]:
    currency = p.offer.price.currency
    return {
        "currency": currency,
        "bucket": p.offer.bucket,
        "estimate_low_nanos": p.estimate.low_nanos,
        "estimate_low": to_decimal_string(p.estimate.low_nanos),
        "estimate_high_nanos": p.estimate.high_nanos,
        "estimate_high": to_decimal_string(p.estimate.high_nanos),
        "available_nanos": p.available_nanos,
        "available": to_decimal_string(p.available_nanos),
        "budget_nanos": p.request.budget_nanos,
        "budget": to_decimal_string(p.request.budget_nanos),
        "steps": p.steps,
    }


def estimate_text(p: Prepared) -> str:
    c = p.offer.price.currency
    return (
        f"{exact(p.estimate.low_nanos, c)} to "
        f"{exact(p.estimate.high_nanos, c)} for {len(p.steps)} steps"
    )


def resolve(snapshot: Snapshot, model: str, route_type: str | None) -> tuple[ModelInfo, str, Offer]:
    name, _, suffix = model.rpartition(":")
    if name and suffix in ("official", "routed"):
        model, route_type = name, suffix
    info = snapshot.models.get(model)
    if info is None:
        raise NotFound(f"the model '{model}' does not exist", code="model_not_found", param="model")
    if route_type is None:
        route_type = "official" if "official" in info.offers else next(iter(info.offers), "")
    offer = info.offers.get(route_type)
    if offer is None:
        offered = ", ".join(sorted(info.offers)) or "none"
        raise NotFound(
            f"the model '{model}' is not offered on the {route_type or 'any'} route "
            f"(available: {offered})",
            code="model_not_found",
            param="route_type",
        )
    return info, route_type, offer


def prepare(
    conn: Connection,
    ledger: Ledger,
    snapshot: Snapshot,
    user_id: int,
    request: RunRequest,
    *,
    refuse: bool = True,
) -> Prepared:
    """Everything known before a run starts; refuses (writing nothing) a question that is empty,
    and — unless ``refuse`` is off (an estimate only) — a budget or a balance below the estimate's
    low end."""
    question = request.question.strip()
    if not question:
        raise BadRequest("the research question must not be empty", param="question")
    if len(question) > MAX_QUESTION:
        raise BadRequest(f"the question is over {MAX_QUESTION} characters", param="question")
    if request.budget_nanos <= 0:
        raise BadRequest("the budget cap must be more than zero", param="budget")
    model, route_type, offer = resolve(snapshot, request.model, request.route_type)
    facts = compute_facts(request.data)
    steps = billing.steps_for(request.data.symbols())
    est = billing.estimate(offer.price, model.output_cap, question, facts, steps)
    balance = ledger.balance(ledger.tx(conn), user_id, offer.bucket)
    prepared = Prepared(
        RunRequest(
            question,
            request.model,
            route_type,
            request.budget_nanos,
            request.data,
            request.source,
        ),
        model,
        route_type,
        offer,
        facts,
        steps,
        est,
        balance.available_nanos,
    )
    c = offer.price.currency
    if not refuse:
        return prepared
    if balance.available_nanos < est.low_nanos:
        raise BalanceBelowEstimate(
            f"your balance ({exact(balance.available_nanos, c)} available) is "
            f"below this run's estimated cost of {estimate_text(prepared)}: top up first",
            details=estimate_details(prepared),
        )
    if request.budget_nanos < est.low_nanos:
        raise BudgetBelowEstimate(
            f"the budget cap {exact(request.budget_nanos, c)} is below this "
            f"run's estimated cost of {estimate_text(prepared)}",
            param="budget",
            details=estimate_details(prepared),
        )
    return prepared


def to_csv(data: MarketData) -> str:
    """The data as one normalised CSV (``date,symbol,open,high,low,close,volume``) that
    ``parse_csv`` reads back to the same frames."""
    out = io.StringIO()
    out.write("date,symbol,open,high,low,close,volume\n")
    for symbol in data.symbols():
        frame = data.frames[symbol]
        columns = [frame[c].astype(float).tolist() for c in COLUMNS]
        for i, when in enumerate(frame.index):
            values = ",".join(repr(float(col[i])) for col in columns)
            out.write(f"{when.date().isoformat()},{symbol},{values}\n")
    return out.getvalue()


def create(
    conn: Connection, ledger: Ledger, p: Prepared, *, user_id: int, now_us: int
) -> tuple[str, str]:
    """Store the run (queued) and mint its key: (run id, the key's secret — shown nowhere)."""
    run_id = "rr_" + secrets.token_hex(12)
    key = keys.create_key(
        conn,
        user_id=user_id,
        body=KeyCreate(
            label=f"research {run_id}",
            project=PROJECT,
            allowed_models=[p.model.name],
            allowed_route_types=[p.route_type],  # type: ignore[list-item]
            default_route_type=p.route_type,  # type: ignore[arg-type]
            spend_limits={
                p.offer.bucket: SpendLimitIn(total=to_decimal_string(p.request.budget_nanos))  # type: ignore[dict-item]
            },
        ),
        currencies=ledger.currencies,
        now_us=now_us,
    )
    repo.insert_run(
        conn,
        id=run_id,
        user_id=user_id,
        question=p.request.question,
        model=p.model.name,
        route_type=p.route_type,
        bucket=p.offer.bucket,
        currency=p.offer.price.currency,
        budget_nanos=p.request.budget_nanos,
        estimate_low_nanos=p.estimate.low_nanos,
        estimate_high_nanos=p.estimate.high_nanos,
        status="queued",
        data_source=p.request.source[:400],
        data_csv=to_csv(p.request.data),
        key_id=key.id,
        created_at=now_us,
    )
    repo.add_event(
        conn,
        run_id,
        kind="queued",
        message=f"run queued: {len(p.steps)} steps, estimated {estimate_text(p)}",
        data=estimate_details(p),
        now_us=now_us,
    )
    return run_id, key.key


def get(conn: Connection, run_id: str, user_id: int) -> RowMapping:
    """The run, only for its owner (anyone else: not found, as if it did not exist)."""
    row = repo.run(conn, run_id)
    if row is None or int(row["user_id"]) != user_id:
        raise RunNotFound(f"no research run {run_id!r}")
    return row


def data_of(run: Mapping[Any, Any]) -> MarketData:
    return parse_csv(str(run["data_csv"]))


def event_view(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "kind": row["kind"],
        "message": row["message"],
        "created_at": int(row["created_at"]),
        "data": orjson.loads(row["data_json"]),
    }


def step_view(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "seq": int(row["seq"]),
        "name": row["name"],
        "status": row["status"],
        "request_id": row["request_id"],
        "max_tokens": int(row["max_tokens"]),
        "input_tokens": int(row["input_tokens"]),
        "output_tokens": int(row["output_tokens"]),
        "charge_nanos": int(row["charge_nanos"]),
        "charge": to_decimal_string(int(row["charge_nanos"])),
        "error": row["error"],
    }


def run_view(conn: Connection, run: Mapping[Any, Any]) -> dict[str, Any]:
    steps: Sequence[RowMapping] = repo.steps(conn, str(run["id"]))
    return {
        "id": run["id"],
        "question": run["question"],
        "model": run["model"],
        "route_type": run["route_type"],
        "bucket": run["bucket"],
        "currency": run["currency"],
        "status": run["status"],
        "stop_reason": run["stop_reason"],
        "data_source": run["data_source"],
        "budget_nanos": int(run["budget_nanos"]),
        "budget": to_decimal_string(int(run["budget_nanos"])),
        "estimate_low_nanos": int(run["estimate_low_nanos"]),
        "estimate_high_nanos": int(run["estimate_high_nanos"]),
        "spent_nanos": int(run["spent_nanos"]),
        "spent": to_decimal_string(int(run["spent_nanos"])),
        "created_at": int(run["created_at"]),
        "finished_at": run["finished_at"],
        "finished": run["status"] in FINISHED,
        "steps": [step_view(s) for s in steps],
        "report_url": f"/api/research/runs/{run['id']}/report",
        "page_url": f"/research/{run['id']}",
    }
