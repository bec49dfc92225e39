"""The research workflow: plan → analyse each symbol → compare → draft → self-check.

Each model step is a request through Tallygate's own gateway, in process (the app's ASGI stack,
no network hop), with the run's own key: the gateway resolves the route, holds the worst case,
calls the upstream with its fallback, settles the charge and writes the receipt exactly as for
any API client. The step's ``max_tokens`` is sized so its hold fits in what is left of the
budget (research.billing); a step the rest of the budget cannot pay for is not started, and the
run stops there with what it has. A step that fails ends the run as failed, its partial report
kept and only what was used charged (the receipts say what). The self-check is computed locally
(research.selfcheck), never asked of a model.

Runs execute as asyncio tasks of the app (``start``), writing their progress as events that any
client can follow (a page reload, a second browser, the CLI)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy import Connection

from tallygate.keys import service as keys
from tallygate.research import billing, prompts
from tallygate.research import repository as repo
from tallygate.research.data import parse_csv
from tallygate.research.facts import compute_facts
from tallygate.research.runs import exact
from tallygate.research.selfcheck import SelfCheck, check
from tallygate.state import AppState

logger = logging.getLogger(__name__)
T = TypeVar("T")
CHAT_PATH = "/v1/chat/completions"
STEP_TIMEOUT_SECONDS = 300.0
RECEIPT_WAIT_SECONDS = 5.0


def start(app: FastAPI, run_id: str, api_key: str) -> asyncio.Task[None]:
    """Run in the background of the app's event loop; the task is kept until it ends."""
    tasks: set[asyncio.Task[None]] | None = getattr(app.state, "research_tasks", None)
    if tasks is None:
        tasks = app.state.research_tasks = set()
    task = asyncio.create_task(execute(app, run_id, api_key), name=f"research-{run_id}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def selfcheck_json(result: SelfCheck) -> str:
    return orjson.dumps(
        {
            "ok": result.ok,
            "citations": [
                {
                    "text": c.text,
                    "value": c.value,
                    "unit": c.unit,
                    "matched": c.matched.key if c.matched is not None else None,
                    "ok": c.ok,
                    "note": c.note,
                }
                for c in result.citations
            ],
        }
    ).decode()


class _Run:
    def __init__(self, app: FastAPI, run_id: str, api_key: str) -> None:
        self.app, self.run_id, self.api_key = app, run_id, api_key
        self.state: AppState = app.state.tallygate
        self.spent = 0

    async def write(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.state.db.begin() as conn:
                return fn(conn)

        return await anyio.to_thread.run_sync(run)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.state.db.read() as conn:
                return fn(conn)

        return await anyio.to_thread.run_sync(run)

    async def event(self, kind: str, message: str, **data: Any) -> None:
        now = self.state.now_us()
        await self.write(
            lambda c: repo.add_event(
                c, self.run_id, kind=kind, message=message, data=data, now_us=now
            )
        )


async def execute(app: FastAPI, run_id: str, api_key: str) -> None:
    r = _Run(app, run_id, api_key)
    notes: list[tuple[str, str]] = []
    status, reason = "failed", "the run ended unexpectedly"
    run = await r.read(lambda c: repo.run(c, run_id))
    assert run is not None
    facts = []
    try:
        data = parse_csv(str(run["data_csv"]))
        facts = compute_facts(data)
        steps = billing.steps_for(data.symbols())
        await r.write(lambda c: repo.update_run(c, run_id, status="running"))
        await r.event("running", f"run started: {', '.join(steps)}", steps=steps)
        status, reason = await _steps(r, run, steps, facts, notes)
    except Exception as exc:  # noqa: BLE001 - the run ends as failed with what it has
        logger.exception("research run %s failed", run_id)
        status, reason = "failed", f"internal error: {exc.__class__.__name__}"
    finally:
        await _finish(r, run, status, reason, facts, notes)


async def _steps(
    r: _Run, run: Any, steps: list[str], facts: list[Any], notes: list[tuple[str, str]]
) -> tuple[str, str]:
    question, budget, currency = str(run["question"]), int(run["budget_nanos"]), run["currency"]
    transport = httpx.ASGITransport(app=r.app, client=("127.0.0.1", 0))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://research.internal", timeout=STEP_TIMEOUT_SECONDS
    ) as client:
        for seq, step in enumerate(steps):
            runtime = r.app.state.gateway
            model = runtime.snapshot.models.get(run["model"])
            offer = model.offers.get(run["route_type"]) if model is not None else None
            if model is None or offer is None:
                return "failed", f"the model {run['model']}:{run['route_type']} is gone"
            kind = prompts.step_kind(step)[0]
            given = notes if kind in ("compare", "draft") else []
            messages = prompts.messages(step, question, facts, given)
            remaining = budget - r.spent
            out = billing.max_tokens(
                offer.price, billing.prompt_tokens(messages), remaining, step, model.output_cap
            )
            if out < billing.MIN_STEP_OUTPUT:
                reason = (
                    f"stopped at the budget cap before '{step}': "
                    f"{exact(remaining, currency)} left of "
                    f"{exact(budget, currency)}"
                )
                await r.event("stopped", reason, step=step, remaining_nanos=remaining)
                return "stopped", reason
            step_id = await _record_start(r, seq, step, out)
            await r.event("step", f"{step}: started (max {out} output tokens)", step=step)
            answer = await client.post(
                CHAT_PATH,
                json={
                    "model": f"{run['model']}:{run['route_type']}",
                    "messages": messages,
                    "max_tokens": out,
                },
                headers={"Authorization": f"Bearer {r.api_key}"},
            )
            ok, text, error = _answer(answer)
            receipt = await _receipt(r, answer.headers.get("x-request-id"))
            charge = int(receipt["charge_nanos"]) if receipt else 0
            r.spent += charge
            spent = r.spent
            await r.write(_record_end(r, step_id, receipt, ok, text, error, charge, spent))
            cost = (
                f"{exact(charge, currency)}; "
                f"{exact(spent, currency)} of "
                f"{exact(budget, currency)} spent"
            )
            if not ok:
                await r.event(
                    "step_failed",
                    f"{step}: failed ({error}); {cost}",
                    step=step,
                    charge_nanos=charge,
                    spent_nanos=spent,
                )
                return "failed", f"'{step}' failed: {error}"
            notes.append((step, text))
            await r.event(
                "step_done",
                f"{step}: done, {cost}",
                step=step,
                charge_nanos=charge,
                spent_nanos=spent,
                request_id=receipt["request_id"] if receipt else None,
            )
    return "done", ""


def _record_end(
    r: _Run, step_id: int, receipt: Any, ok: bool, text: str, error: str, charge: int, spent: int
) -> Callable[[Connection], None]:
    def write(c: Connection) -> None:
        repo.update_step(
            c,
            step_id,
            status="done" if ok else "failed",
            request_id=receipt["request_id"] if receipt else None,
            input_tokens=int(receipt["input_tokens"]) if receipt else 0,
            output_tokens=int(receipt["output_tokens"]) if receipt else 0,
            charge_nanos=charge,
            output=text,
            error=error,
            finished_at=r.state.now_us(),
        )
        repo.update_run(c, r.run_id, spent_nanos=spent)

    return write


async def _record_start(r: _Run, seq: int, step: str, out: int) -> int:
    now = r.state.now_us()
    return await r.write(
        lambda c: repo.insert_step(
            c,
            run_id=r.run_id,
            seq=seq,
            name=step,
            status="running",
            max_tokens=out,
            started_at=now,
        )
    )


def _answer(answer: httpx.Response) -> tuple[bool, str, str]:
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code == 200 and isinstance(body, dict):
        choices = body.get("choices") or [{}]
        text = str((choices[0].get("message") or {}).get("content") or "")
        return True, text, ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return False, "", str(message or f"HTTP {answer.status_code}")


async def _receipt(r: _Run, request_id: str | None) -> Any:
    if not request_id:
        return None
    waited = 0.0
    while True:
        rows = await r.read(lambda c: repo.receipts(c, [request_id]))
        if rows or waited >= RECEIPT_WAIT_SECONDS:
            return rows[0] if rows else None
        await asyncio.sleep(0.05)
        waited += 0.05


def analysis_of(notes: list[tuple[str, str]]) -> str:
    """The draft when the run got that far, else what the finished steps wrote."""
    for name, text in notes:
        if name == "draft":
            return text
    return "\n\n".join(f"[{name}] {text}" for name, text in notes if name != "plan")


async def _finish(
    r: _Run, run: Any, status: str, reason: str, facts: list[Any], notes: list[tuple[str, str]]
) -> None:
    analysis = analysis_of(notes)
    result = check(analysis, facts) if analysis else None
    try:
        now = r.state.now_us()
        currency = run["currency"]

        def finish(c: Connection) -> None:
            spent = repo.spent(c, r.run_id)
            repo.update_run(
                c,
                r.run_id,
                status=status,
                stop_reason=reason,
                analysis=analysis,
                selfcheck_json=selfcheck_json(result) if result is not None else None,
                spent_nanos=spent,
                finished_at=now,
            )
            if run["key_id"] is not None:
                keys.revoke_key(
                    c,
                    int(run["key_id"]),
                    user_id=int(run["user_id"]),
                    currencies=r.state.ledger.currencies,
                    now_us=now,
                )
            flagged = len(result.mismatches) if result is not None else 0
            repo.add_event(
                c,
                r.run_id,
                kind="finished",
                message=(
                    f"run {status}: {exact(spent, currency)} spent"
                    + (f" — {reason}" if reason else "")
                    + (f"; self-check flagged {flagged} figure(s)" if flagged else "")
                ),
                data={"status": status, "spent_nanos": spent, "flagged": flagged},
                now_us=now,
            )

        await r.write(finish)
    except Exception:
        logger.exception("research run %s: could not record its end", r.run_id)
