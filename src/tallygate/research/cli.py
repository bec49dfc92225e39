"""``tallygate research``: start a run on a Tallygate server with an API key or a session token,
print its progress as it happens (the server-sent events), and save the report.

Expected failures raise ``ResearchCliError`` with a readable line (the server's own message for a
refused run: the estimate for a low balance, the CSV problem for malformed data)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson


class ResearchCliError(Exception):
    pass


def _error(answer: httpx.Response) -> ResearchCliError:
    try:
        error = answer.json().get("error") or {}
    except ValueError:
        error = {}
    message = error.get("message") if isinstance(error, dict) else None
    return ResearchCliError(f"{message or answer.text[:200]} (HTTP {answer.status_code})")


def run(
    *,
    server: str,
    token: str,
    question: str,
    model: str,
    route_type: str | None,
    budget: str,
    sample: str | None,
    csv_files: Sequence[Path],
    out: Path,
    echo: Callable[[str], None],
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Start, follow and save; returns the finished run (its status may be stopped or failed)."""
    headers = {"Authorization": f"Bearer {token}"}
    fields = {"question": question, "model": model, "budget": budget}
    if route_type:
        fields["route_type"] = route_type
    if sample:
        fields["sample"] = sample
    files = []
    for path in csv_files:
        try:
            files.append(("files", (path.name, path.read_bytes(), "text/csv")))
        except OSError as exc:
            raise ResearchCliError(f"cannot read {path}: {exc.strerror}") from None
    with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout) as client:
        try:
            started = client.post("/api/research/runs", data=fields, files=files or None)
        except httpx.HTTPError as exc:
            raise ResearchCliError(f"cannot reach {server}: {exc}") from None
        if started.status_code != 202:
            raise _error(started)
        run_id = started.json()["id"]
        echo(f"research run {run_id} started")
        with client.stream("GET", f"/api/research/runs/{run_id}/events") as events:
            if events.status_code != 200:
                events.read()
                raise _error(events)
            for line in events.iter_lines():
                if line.startswith("data: "):
                    echo("  " + str(orjson.loads(line[6:])["message"]))
        finished = client.get(f"/api/research/runs/{run_id}")
        if finished.status_code != 200:
            raise _error(finished)
        suffix = ".html" if out.suffix.lower() in (".html", ".htm") else ".md"
        report = client.get(f"/api/research/runs/{run_id}/report{suffix}")
        if report.status_code != 200:
            raise _error(report)
    out.write_bytes(report.content)
    result: dict[str, Any] = finished.json()
    echo(
        f"{result['status']}: {result['spent']} {result['currency']} spent of "
        f"{result['budget']} — report saved to {out}"
    )
    return result
