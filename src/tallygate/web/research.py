"""Console pages: the research assistant (issue 8, docs/research.md).

- ``GET /research``: the start form (question, a shipped sample or CSV files, model and route,
  budget cap), the estimate of what the run will cost with a warning when the balance is below
  it, and my runs;
- ``POST /research``: *Estimate cost* shows the estimate for what was entered; *Start research*
  starts the run exactly as the API does (research.service) and goes to its page. Bad input —
  malformed CSV, a cap that is not a number, too little balance — comes back on the form with
  the message naming the problem; nothing is written and nothing charged;
- ``GET /research/{run_id}``: progress and cost so far against the cap (app.js follows the run
  through ``GET /api/research/runs/{id}`` and reloads when it ends), then the report with its
  Markdown and HTML downloads (the API's, which take the session cookie). Another user's run is
  not found."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from tallygate.catalog import marketplace
from tallygate.errors import TallygateError
from tallygate.kit.money import SYMBOLS
from tallygate.research import inputs, runs, service
from tallygate.research import report as reports
from tallygate.research import repository as repo
from tallygate.research.data import SAMPLES
from tallygate.research.report import DISCLAIMER
from tallygate.web.auth import SignedIn, SignedInForm, Viewer
from tallygate.web.render import page

router = APIRouter(include_in_schema=False)
RunId = Annotated[str, Path(max_length=32, pattern=runs.RUN_ID_PATTERN)]
EXAMPLE_QUESTION = (
    "Compare the last six months of the two tickers: trend, volatility, drawdowns, "
    "and what would change the picture."
)
FIELDS = ("question", "sample", "model", "budget")


def _models(v: Viewer) -> list[str]:
    """The models and routes I can use (``name:route``), as the marketplace lists them."""
    assert v.user is not None
    with v.state.db.read() as conn:
        market = marketplace.marketplace(
            conn, user_id=v.user.id, now_us=v.state.now_us(), currencies=v.state.ledger.currencies
        )
    return [o.api_model_id for m in market.models for o in m.offers if o.enabled and o.prices]


def _runs(v: Viewer) -> list[dict[str, Any]]:
    assert v.user is not None
    with v.state.db.read() as conn:
        return [dict(r) for r in repo.runs_of(conn, v.user.id)]


def _page(
    request: Request,
    v: Viewer,
    form: dict[str, str],
    *,
    models: list[str],
    status: int = 200,
    **context: Any,
) -> Response:
    return page(
        request,
        v,
        "research.html",
        status_code=status,
        title="Research",
        nav="research",
        form=form,
        models=models,
        samples=SAMPLES,
        runs=_runs(v),
        disclaimer=DISCLAIMER,
        **context,
    )


async def _estimate(request: Request, v: Viewer, body: runs.RunRequest) -> dict[str, Any]:
    assert v.user is not None
    return await anyio.to_thread.run_sync(service.estimate, request.app, v.state, v.user.id, body)


@router.get("/research")
async def research_form(request: Request, v: SignedIn) -> Response:
    """The form filled with an example: the first model I can use on the default sample, and its
    estimate; the budget cap suggested is the estimate's high end (the run fits in it)."""
    models = await anyio.to_thread.run_sync(_models, v)
    form = {
        "question": EXAMPLE_QUESTION,
        "sample": inputs.DEFAULT_SAMPLE,
        "model": "",
        "budget": "",
    }
    estimate, error = None, None
    if models:
        form["model"] = models[0]
        try:
            body = inputs.run_request(
                question=form["question"],
                model=form["model"],
                route_type=None,
                budget_text="1",  # any cap: the estimate does not depend on it
                sample=form["sample"],
                files=[],
            )
            estimate = await _estimate(request, v, body)
            form["budget"] = estimate["estimate_high"]
        except TallygateError as exc:
            error = exc.message
    else:
        error = "no model is offered to you yet: an operator has to add one"
    return _page(request, v, form, models=models, estimate=estimate, error=error)


@router.post("/research")
async def start_research(request: Request, v: SignedInForm) -> Response:
    assert v.user is not None
    data = await request.form()  # already parsed (and the CSRF token checked) by SignedInForm
    form = {name: str(data.get(name) or "") for name in FIELDS}
    try:
        body = await inputs.from_form(data)
        if data.get("action") == "estimate":
            estimate = await _estimate(request, v, body)
            models = await anyio.to_thread.run_sync(_models, v)
            return _page(request, v, form, models=models, estimate=estimate)
        run_id = await service.start_run(request.app, v.state, v.user.id, body)
    except TallygateError as exc:
        # a refusal below the estimate carries the estimate: show it with the message
        shown = exc.details if "estimate_low_nanos" in exc.details else None
        models = await anyio.to_thread.run_sync(_models, v)
        return _page(
            request,
            v,
            form,
            models=models,
            status=exc.status,
            error=exc.message,
            estimate=shown,
        )
    return RedirectResponse(f"/research/{run_id}", status_code=303)


def _run_page(v: Viewer, run_id: str) -> dict[str, Any]:
    assert v.user is not None
    with v.state.db.read() as conn:
        run = runs.get(conn, run_id, v.user.id)
        view = runs.run_view(conn, run)
        events = [runs.event_view(e) for e in repo.events(conn, run_id)]
        report = reports.build(conn, run) if view["finished"] else None
    return {"run": view, "events": events, "report": report}


@router.get("/research/{run_id}")
async def research_run(request: Request, v: SignedIn, run_id: RunId) -> Response:
    context = await anyio.to_thread.run_sync(_run_page, v, run_id)
    run = context["run"]
    return page(
        request,
        v,
        "research_run.html",
        title=f"Research {run_id}",
        nav="research",
        symbol=SYMBOLS.get(str(run["currency"]).upper(), ""),
        disclaimer=DISCLAIMER,
        **context,
    )
