"""Starting and estimating a research run: the one path the API and the console page share.

``estimate`` writes nothing; ``start_run`` refuses up front (an empty question, a budget or a
balance below the estimate — nothing written, nothing charged), else stores the run with its own
key and starts it in the background of the app (research.workflow)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI

from tallygate.research import runs, workflow
from tallygate.research.runs import RunRequest
from tallygate.state import AppState


async def start_run(app: FastAPI, state: AppState, user_id: int, body: RunRequest) -> str:
    """Prepare (refusing up front, writing nothing), store and start a run: its id."""
    snapshot = app.state.gateway.snapshot

    def create() -> tuple[str, str]:
        with state.db.begin() as conn:
            prepared = runs.prepare(conn, state.ledger, snapshot, user_id, body)
            return runs.create(conn, state.ledger, prepared, user_id=user_id, now_us=state.now_us())

    run_id, key = await anyio.to_thread.run_sync(create)
    workflow.start(app, run_id, key)
    return run_id


def estimate(app: FastAPI, state: AppState, user_id: int, body: RunRequest) -> dict[str, Any]:
    """What the run would cost (``runs.estimate_details``), its text, and whether the balance
    available in the paying bucket is below the estimate's low end. Blocking: call it off the
    event loop."""
    snapshot = app.state.gateway.snapshot
    with state.db.read() as conn:
        prepared = runs.prepare(conn, state.ledger, snapshot, user_id, body, refuse=False)
    details = runs.estimate_details(prepared)
    details["text"] = runs.estimate_text(prepared)
    details["balance_below_estimate"] = prepared.available_nanos < prepared.estimate.low_nanos
    return details
