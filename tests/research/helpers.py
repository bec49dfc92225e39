"""Research test helpers: start a run through the API and wait for it to end."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import text

from tests.fixtures.gateway import OFFICIAL_CHAT, World

QUESTION = "Compare the last six months of the two tickers: trend, volatility and drawdowns."


def start(client: httpx.Client, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "question": QUESTION,
        "model": OFFICIAL_CHAT,
        "budget": "1.00",
        "sample": "two-tickers",
    }
    body.update(fields)
    return client.post("/api/research/runs", json=body)


def wait(client: httpx.Client, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/api/research/runs/{run_id}")
        assert answer.status_code == 200, answer.text
        run = answer.json()
        if run["finished"]:
            return dict(run)
        assert time.monotonic() < deadline, f"run {run_id} did not end: {run}"
        time.sleep(0.1)


def run_to_end(world: World, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the finished run, its report) for a run started by the world's user."""
    with world.as_user() as client:
        started = start(client, **fields)
        assert started.status_code == 202, started.text
        run = wait(client, started.json()["id"])
        report = client.get(f"/api/research/runs/{run['id']}/report")
        assert report.status_code == 200, report.text
    return run, report.json()


def research_rows(world: World, table: str) -> list[dict[str, Any]]:
    with world.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table}"))]  # noqa: S608
