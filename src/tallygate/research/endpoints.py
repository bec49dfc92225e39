"""The research API: start a run (JSON with CSV text, or multipart with CSV files), estimate one,
read a run, follow its progress (server-sent events) and fetch its report (JSON, Markdown, HTML).

Authenticated like the other JSON APIs (a session token or cookie) or with one of the user's
API keys (``Authorization: Bearer tg-…``). A run is visible to its owner only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from sqlalchemy import select

from tallygate.errors import BadRequest, Forbidden, Unauthorized
from tallygate.keys import scopes
from tallygate.keys.service import KEY_PREFIX, key_hash
from tallygate.models.keys import api_keys
from tallygate.research import inputs, runs, service
from tallygate.research import report as reports
from tallygate.research import repository as repo
from tallygate.research.html import standalone
from tallygate.research.runs import RunRequest
from tallygate.state import ReadConn, State
from tallygate.users import service as users
from tallygate.users.dependencies import current_session, presented_token
from tallygate.users.service import User

router = APIRouter(prefix="/api/research", tags=["research"])
RunId = Annotated[str, Path(max_length=32, pattern=runs.RUN_ID_PATTERN)]
POLL_SECONDS = 0.25


def research_user(request: Request, conn: ReadConn, state: State) -> User:
    """A session (token or cookie), or one of the user's live API keys (then kept on the request
    so a run it starts stays within the key's models and route types)."""
    token = presented_token(request)
    if token is not None and token.startswith(KEY_PREFIX):
        row = (
            conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash(token)))
            .mappings()
            .first()
        )
        now = state.now_us()
        if (
            row is None
            or row["revoked_at"] is not None
            or (row["expires_at"] is not None and int(row["expires_at"]) <= now)
        ):
            raise Unauthorized("invalid API key", code="invalid_api_key")
        request.state.research_key = row
        return users.get_user(conn, int(row["user_id"]))
    return current_session(request, conn, state).user


ResearchUser = Annotated[User, Depends(research_user)]


async def _request(request: Request) -> RunRequest:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data") or ctype.startswith(
        "application/x-www-form-urlencoded"
    ):
        return await inputs.from_form(await request.form())
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    uploads = []
    if isinstance(body.get("csv"), str):
        uploads.append(inputs.Upload("csv", body["csv"]))
    for i, item in enumerate(body.get("files") or []):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise BadRequest("files[] items are {name, text}", param="files")
        uploads.append(inputs.Upload(str(item.get("name") or f"file {i + 1}"), item["text"]))
    budget = body.get("budget")
    return inputs.run_request(
        question=body.get("question") if isinstance(body.get("question"), str) else None,
        model=body.get("model") if isinstance(body.get("model"), str) else None,
        route_type=body.get("route_type") if isinstance(body.get("route_type"), str) else None,
        budget_text=str(budget) if budget is not None else None,
        sample=body.get("sample") if isinstance(body.get("sample"), str) else None,
        files=uploads,
    )


def _within_key(request: Request, key: Any, body: RunRequest) -> None:
    """A run started with an API key may use only what that key may call."""
    model, route_type, _ = runs.resolve(
        request.app.state.gateway.snapshot, body.model, body.route_type
    )
    globs = orjson.loads(key["allowed_models"])
    route_types = orjson.loads(key["allowed_route_types"])
    if not scopes.admits(globs, route_types, model.name, route_type):
        raise Forbidden(
            f"this API key may not use {model.name}:{route_type}", code="model_not_allowed"
        )


@router.post("/runs", status_code=202)
async def create_run(request: Request, user: ResearchUser, state: State) -> JSONResponse:
    body = await _request(request)
    key = getattr(request.state, "research_key", None)
    if key is not None:
        _within_key(request, key, body)
    run_id = await service.start_run(request.app, state, user.id, body)
    with state.db.read() as conn:
        view = runs.run_view(conn, runs.get(conn, run_id, user.id))
    return JSONResponse(view, status_code=202)


@router.post("/estimate")
async def estimate_run(request: Request, user: ResearchUser, state: State) -> dict[str, Any]:
    body = await _request(request)
    return await anyio.to_thread.run_sync(service.estimate, request.app, state, user.id, body)


@router.get("/runs")
def list_runs(user: ResearchUser, conn: ReadConn) -> dict[str, Any]:
    return {"data": [runs.run_view(conn, r) for r in repo.runs_of(conn, user.id)]}


@router.get("/runs/{run_id}")
def get_run(run_id: RunId, user: ResearchUser, conn: ReadConn) -> dict[str, Any]:
    run = runs.get(conn, run_id, user.id)
    view = runs.run_view(conn, run)
    view["events"] = [runs.event_view(e) for e in repo.events(conn, run_id)]
    return view


@router.get("/runs/{run_id}/events")
async def follow(
    request: Request,
    run_id: RunId,
    user: ResearchUser,
    state: State,
    after: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    """Server-sent events, one per progress event (``id``, ``event`` = kind, ``data`` = JSON),
    from ``after`` (or ``Last-Event-ID``) until the run has finished."""
    with state.db.read() as conn:
        runs.get(conn, run_id, user.id)
    last = request.headers.get("last-event-id")
    start = int(last) if last and last.isdigit() else after

    def read(after_id: int) -> tuple[list[dict[str, Any]], bool]:
        with state.db.read() as conn:
            run = repo.run(conn, run_id)
            rows = [runs.event_view(e) for e in repo.events(conn, run_id, after_id)]
            return rows, run is not None and run["status"] in runs.FINISHED

    async def stream() -> AsyncIterator[bytes]:
        cursor = start
        while True:
            rows, finished = await anyio.to_thread.run_sync(read, cursor)
            for event in rows:
                cursor = event["id"]
                yield (
                    f"id: {event['id']}\nevent: {event['kind']}\ndata: ".encode()
                    + orjson.dumps(event)
                    + b"\n\n"
                )
            if finished or await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _report(conn: Any, run_id: str, user_id: int) -> reports.Report:
    return reports.build(conn, runs.get(conn, run_id, user_id))


@router.get("/runs/{run_id}/report")
def report_json(run_id: RunId, user: ResearchUser, conn: ReadConn) -> dict[str, Any]:
    r = _report(conn, run_id, user.id)
    return {
        "run": r.run,
        "coverage": [
            {
                "symbol": c.symbol,
                "first": c.first.isoformat(),
                "last": c.last.isoformat(),
                "rows": c.rows,
            }
            for c in r.coverage
        ],
        "charts": sorted(r.charts),
        "facts": [
            {
                "key": f.key,
                "symbol": f.symbol,
                "label": f.label,
                "value": f.value,
                "display": f.display,
                "unit": f.unit,
                "convention": f.convention,
            }
            for f in r.facts
        ],
        "conventions": r.conventions,
        "analysis": r.analysis,
        "selfcheck": r.selfcheck,
        "costs": [
            {
                "step": c.step,
                "status": c.status,
                "request_id": c.request_id,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "charge_nanos": c.charge_nanos,
                "receipt_url": c.receipt_url,
            }
            for c in r.costs
        ],
        "total_nanos": r.total_nanos,
        "ledger_nanos": r.ledger_nanos,
        "currency": r.currency,
        "disclaimer": r.disclaimer,
    }


def _download(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@router.get("/runs/{run_id}/report.md")
def report_markdown(run_id: RunId, user: ResearchUser, conn: ReadConn) -> PlainTextResponse:
    text = reports.markdown(_report(conn, run_id, user.id))
    return PlainTextResponse(
        text, media_type="text/markdown; charset=utf-8", headers=_download(f"{run_id}.md")
    )


@router.get("/runs/{run_id}/report.html")
def report_html(run_id: RunId, user: ResearchUser, conn: ReadConn) -> HTMLResponse:
    html = standalone(_report(conn, run_id, user.id))
    return HTMLResponse(html, headers=_download(f"{run_id}.html"))
