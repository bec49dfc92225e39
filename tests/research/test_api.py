"""The research API (both databases): start with JSON, multipart files or an API key; follow the
run over server-sent events to its end; fetch the report as Markdown and standalone HTML."""

from __future__ import annotations

import orjson

from tallygate.research.data import load_sample
from tallygate.research.runs import to_csv
from tests.fixtures.gateway import World
from tests.research.helpers import QUESTION, start, wait


def _events(raw: str) -> list[dict[str, object]]:
    events = []
    for block in raw.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append(
            {"id": int(fields["id"]), "event": fields["event"], **orjson.loads(fields["data"])}
        )
    return events


class TestApi:
    def test_events_stream_every_step_until_the_run_ends(self, world: World) -> None:
        with world.as_user() as client:
            run_id = start(client).json()["id"]
            streamed = client.get(f"/api/research/runs/{run_id}/events", timeout=60)
            run = wait(client, run_id)
            again = client.get(
                f"/api/research/runs/{run_id}/events", headers={"Last-Event-ID": "2"}
            )
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = _events(streamed.text)
        kinds = [e["event"] for e in events]
        assert kinds[0] == "queued" and kinds[1] == "running" and kinds[-1] == "finished"
        done = [e for e in events if e["event"] == "step_done"]
        assert [e["data"]["step"] for e in done] == [s["name"] for s in run["steps"]]  # type: ignore[index]
        # cost so far against the cap, step by step, ending at the run's total
        assert done[-1]["data"]["spent_nanos"] == run["spent_nanos"]  # type: ignore[index]
        assert [e["id"] for e in _events(again.text)] == [e["id"] for e in events if e["id"] > 2]

    def test_multipart_upload_with_an_api_key_and_the_downloads(self, world: World) -> None:
        csv = to_csv(load_sample("two-tickers")).encode()
        with world.http() as client:  # the world's API key, not a session
            started = client.post(
                "/api/research/runs",
                data={
                    "question": QUESTION,
                    "model": "tg-chat",
                    "route_type": "routed",
                    "budget": "2",
                },
                files=[("files", ("prices.csv", csv, "text/csv"))],
            )
            assert started.status_code == 202, started.text
            body = started.json()
            assert body["data_source"] == "prices.csv"
            assert (body["route_type"], body["bucket"], body["currency"]) == (
                "routed",
                "routed",
                "CNY",
            )
            run = wait(client, body["id"])
            md = client.get(f"/api/research/runs/{run['id']}/report.md")
            html = client.get(f"/api/research/runs/{run['id']}/report.html")
        assert run["status"] == "done"
        assert md.headers["content-disposition"] == f'attachment; filename="{run["id"]}.md"'
        assert md.text.startswith(f"# Research: {QUESTION}")
        assert "Research support, not financial advice." in md.text
        for step in run["steps"]:
            assert step["request_id"] in md.text and step["request_id"] in html.text
        assert html.text.startswith("<!doctype html>")
        assert "<svg" in html.text and "<script" not in html.text
        assert 'src="http' not in html.text and "<link" not in html.text
        assert "Research support, not financial advice." in html.text

    def test_unauthenticated_and_revoked_keys_are_refused(self, world: World) -> None:
        key_id, key = world.new_key()
        with world.as_user() as client:
            client.post(f"/api/keys/{key_id}/revoke", json={})
        with world.http(key) as client:
            refused = client.get("/api/research/runs")
        assert refused.status_code == 401
        with world.http("not-a-token") as client:
            assert client.get("/api/research/runs").status_code == 401

    def test_a_key_starts_runs_only_within_its_scopes(self, world: World) -> None:
        _, key = world.new_key(allowed_route_types=["routed"])
        with world.http(key) as client:
            refused = start(client, model="tg-chat:official")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "model_not_allowed"
        assert world.receipts() == []

    def test_estimate_without_starting(self, world: World) -> None:
        with world.as_user() as client:
            answer = client.post(
                "/api/research/estimate",
                json={"question": QUESTION, "model": "tg-chat:official", "budget": "1"},
            )
            runs = client.get("/api/research/runs").json()["data"]
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert 0 < body["estimate_low_nanos"] <= body["estimate_high_nanos"]
        assert body["balance_below_estimate"] is False and runs == []
        assert world.receipts() == []
