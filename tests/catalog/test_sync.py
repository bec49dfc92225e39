"""Catalog sync over HTTP on both databases: the preview shows the exact diff, apply applies
exactly that (each change audited, the chain intact), and a stale diff is refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tallygate.models.catalog import price_versions
from tests.catalog.helpers import add_model, as_user, audit_events, ok, set_prices
from tests.fixtures.server import LiveServer

PRICE_LIST = """
models:
  - name: gpt-4o-mini
    description: Small, fast GPT-4o
    offers:
      official: {input: "0.15", output: "0.70", cached_input: "0.075"}
  - name: claude-3-haiku
    context_length: 200000
    output_cap: 4096
    offers:
      routed: {input: 2, output: 10.5}
"""


def prices(input: int, output: int, cached: int) -> dict[str, Any]:
    def text(n: int) -> str:
        whole, frac = divmod(n, 1_000_000_000)
        digits = f"{frac:09d}".rstrip("0").ljust(2, "0")
        return f"{whole}.{digits}"

    return {
        "input_per_m_nanos": input,
        "input_per_m": text(input),
        "output_per_m_nanos": output,
        "output_per_m": text(output),
        "cached_input_per_m_nanos": cached,
        "cached_input_per_m": text(cached),
    }


@pytest.fixture
def operator(live: LiveServer) -> Iterator[httpx.Client]:
    with as_user(live, live.make.operator(email="op@example.com")) as http:
        add_model(http, "gpt-4o-mini", description="old")
        set_prices(http, "gpt-4o-mini", "official", "0.15", "0.60", cached_input="0.075")
        set_prices(http, "gpt-4o-mini", "routed", "1", "4")
        add_model(http, "legacy")
        set_prices(http, "legacy", "official", "1", "2")
        yield http


def preview(http: httpx.Client, **source: Any) -> dict[str, Any]:
    return ok(http.post("/admin/api/catalog/sync/preview", json=source))  # type: ignore[no-any-return]


@contextmanager
def serving_text(body: str) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/yaml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/prices.yaml"
    finally:
        server.shutdown()
        server.server_close()


class TestPreview:
    def test_shows_added_changed_and_not_in_the_price_list_exactly(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        diff = preview(operator, text=PRICE_LIST)
        assert len(diff.pop("diff_id")) == 64
        assert diff == {
            "added": [
                {
                    "name": "claude-3-haiku",
                    "description": "",
                    "context_length": 200_000,
                    "output_cap": 4096,
                    "prices": [
                        {
                            "route_type": "routed",
                            "old": None,
                            "new": prices(2_000_000_000, 10_500_000_000, 2_000_000_000),
                        }
                    ],
                }
            ],
            "changed": [
                {
                    "name": "gpt-4o-mini",
                    "fields": {"description": {"old": "old", "new": "Small, fast GPT-4o"}},
                    "prices": [
                        {
                            "route_type": "official",
                            "old": prices(150_000_000, 600_000_000, 75_000_000),
                            "new": prices(150_000_000, 700_000_000, 75_000_000),
                        }
                    ],
                }
            ],
            "unchanged": [],
            "not_in_price_list": [
                {"name": "gpt-4o-mini", "route_types": ["routed"], "whole_model": False},
                {"name": "legacy", "route_types": ["official"], "whole_model": True},
            ],
        }

    def test_changes_nothing(self, live: LiveServer, operator: httpx.Client) -> None:
        before = ok(operator.get("/admin/api/models"))
        events = len(audit_events(live))
        preview(operator, text=PRICE_LIST)
        assert ok(operator.get("/admin/api/models")) == before
        assert len(audit_events(live)) == events

    def test_the_same_list_as_json_text_yaml_text_document_or_url_gives_the_same_diff(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        document = {
            "models": [
                {
                    "name": "gpt-4o-mini",
                    "description": "Small, fast GPT-4o",
                    "offers": {
                        "official": {"input": "0.15", "output": "0.70", "cached_input": "0.075"}
                    },
                },
                {
                    "name": "claude-3-haiku",
                    "context_length": 200000,
                    "output_cap": 4096,
                    "offers": {"routed": {"input": "2", "output": "10.5"}},
                },
            ]
        }
        from_yaml = preview(operator, text=PRICE_LIST)
        from_document = preview(operator, document=document)
        from_json_text = preview(operator, text=json.dumps(document))
        with serving_text(PRICE_LIST) as url:
            from_url = preview(operator, url=url)
        assert from_yaml == from_document == from_json_text == from_url

    def test_numbers_in_yaml_and_json_text_are_read_exactly_but_parsed_floats_are_refused(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        def listed(output: str) -> str:
            return (
                "models: [{name: m, context_length: 9, output_cap: 9, "
                f"offers: {{official: {{input: 0.1, output: {output}}}}}}}]"
            )

        (price,) = preview(operator, text=listed("0.3"))["added"][0]["prices"]
        assert (price["new"]["input_per_m_nanos"], price["new"]["output_per_m_nanos"]) == (
            100_000_000,
            300_000_000,
        )
        # Read as written, this number has more digits than a nano-unit: refused, not rounded.
        too_precise = operator.post(
            "/admin/api/catalog/sync/preview", json={"text": listed("0.30000000000000004")}
        )
        assert too_precise.status_code == 400
        assert too_precise.json()["error"]["message"] == (
            "models[0] (m).offers.official.output has more than 9 decimal places: "
            "0.30000000000000004"
        )
        parsed_float = operator.post(
            "/admin/api/catalog/sync/preview",
            json={
                "document": {
                    "models": [
                        {
                            "name": "m",
                            "context_length": 9,
                            "output_cap": 9,
                            "offers": {"official": {"input": 0.1, "output": "1"}},
                        }
                    ]
                }
            },
        )
        assert parsed_float.status_code == 400
        assert "write prices as decimal strings" in parsed_float.json()["error"]["message"]

    def test_invalid_price_lists_are_refused_clearly(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        cases = {
            "models: [{name: brand-new}]": "model 'brand-new' is new: the price list must give its context_length and output_cap",
            "models: [{name: 'a:routed', context_length: 1, output_cap: 1}]": "invalid model name 'a:routed'",
            "models: [{name: x, offers: {cheap: {input: '1', output: '1'}}}]": "offers.cheap: unknown route type",
            "models: [{name: legacy}, {name: legacy}]": "model 'legacy' is listed twice in the price list",
            "models: {not: a list}": "invalid price list: models:",
            "{": "the price list is neither valid JSON nor YAML",
        }
        for text, message in cases.items():
            response = operator.post("/admin/api/catalog/sync/preview", json={"text": text})
            assert response.status_code == 400, text
            assert message in response.json()["error"]["message"], text

    def test_exactly_one_source_is_required(self, live: LiveServer, operator: httpx.Client) -> None:
        for body in ({}, {"text": PRICE_LIST, "url": "http://127.0.0.1:9/x"}):
            response = operator.post("/admin/api/catalog/sync/preview", json=body)
            assert response.status_code == 400
            assert response.json()["error"]["message"] == "give exactly one of: document, text, url"

    def test_an_unreachable_url_is_a_clear_error(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        with serving_text(PRICE_LIST) as url:
            pass  # the port is closed again
        response = operator.post("/admin/api/catalog/sync/preview", json={"url": url})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "url"
        assert error["message"].startswith("fetching the price list failed: ClientConnectorError")
        not_http = operator.post(
            "/admin/api/catalog/sync/preview", json={"url": "file:///etc/passwd"}
        )
        assert not_http.json()["error"]["message"] == "url must be an http:// or https:// address"


class TestApply:
    def test_applies_exactly_the_previewed_diff(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        diff = preview(operator, text=PRICE_LIST)
        result = ok(
            operator.post(
                "/admin/api/catalog/sync/apply",
                json={"text": PRICE_LIST, "diff_id": diff["diff_id"]},
            )
        )
        assert result["applied"] == diff
        models = {m["name"]: m for m in ok(operator.get("/admin/api/models"))}
        haiku, mini, legacy = models["claude-3-haiku"], models["gpt-4o-mini"], models["legacy"]
        assert (haiku["context_length"], haiku["output_cap"]) == (200_000, 4096)
        assert [o["route_type"] for o in haiku["offers"]] == ["routed"]
        assert haiku["offers"][0]["prices"]["output_per_m"] == "10.50"
        assert mini["description"] == "Small, fast GPT-4o"
        official, routed = mini["offers"]
        assert official["prices"]["output_per_m"] == "0.70"
        assert routed["prices"]["input_per_m"] == "1.00"  # not in the list: kept
        assert legacy["offers"][0]["enabled"] and legacy["enabled"]  # never deleted or disabled
        with live.db.read() as conn:
            synced = conn.execute(
                select(price_versions.c.source, price_versions.c.created_by).where(
                    price_versions.c.source == "sync"
                )
            ).all()
        assert [tuple(r) for r in synced] == [("sync", "op@example.com")] * 2
        again = preview(operator, text=PRICE_LIST)
        assert (again["added"], again["changed"]) == ([], [])
        assert again["unchanged"] == ["gpt-4o-mini", "claude-3-haiku"]

    def test_every_applied_change_has_an_audit_event_and_the_chain_verifies(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        events_before = len(audit_events(live))
        diff = preview(operator, text=PRICE_LIST)
        result = ok(
            operator.post(
                "/admin/api/catalog/sync/apply",
                json={"text": PRICE_LIST, "diff_id": diff["diff_id"]},
            )
        )
        new_events = audit_events(live)[events_before:]  # verified inside
        assert result["audit_events"] == len(new_events) == 4
        assert [(e.action, e.target) for e in new_events] == [
            ("model.create", "model:claude-3-haiku"),
            ("model.update", "model:gpt-4o-mini"),
            ("price.set", "model:claude-3-haiku:routed"),
            ("price.set", "model:gpt-4o-mini:official"),
        ]
        assert all(e.actor == "op@example.com" and e.source == "operator" for e in new_events)
        assert all(e.reason == f"catalog sync {diff['diff_id']}" for e in new_events)
        update = new_events[1]
        assert (update.before, update.after) == (
            {"description": "old"},
            {"description": "Small, fast GPT-4o"},
        )
        price = new_events[3]
        assert price.before["prices"]["output_per_m"] == "0.60"
        assert price.after["prices"]["output_per_m"] == "0.70"

    def test_a_stale_diff_id_is_refused_and_nothing_changes(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        diff = preview(operator, text=PRICE_LIST)
        set_prices(operator, "gpt-4o-mini", "official", "0.15", "0.65")  # the catalog moved
        before = ok(operator.get("/admin/api/models"))
        events = len(audit_events(live))
        response = operator.post(
            "/admin/api/catalog/sync/apply", json={"text": PRICE_LIST, "diff_id": diff["diff_id"]}
        )
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "stale_diff"
        assert error["message"].startswith("the catalog or the price list changed since")
        assert error["details"]["diff_id"] != diff["diff_id"]
        assert ok(operator.get("/admin/api/models")) == before
        assert len(audit_events(live)) == events

    def test_a_different_price_list_with_an_old_diff_id_is_refused(
        self, live: LiveServer, operator: httpx.Client
    ) -> None:
        diff = preview(operator, text=PRICE_LIST)
        response = operator.post(
            "/admin/api/catalog/sync/apply",
            json={"text": PRICE_LIST.replace('"0.70"', '"7.00"'), "diff_id": diff["diff_id"]},
        )
        assert response.status_code == 409
        assert [m["name"] for m in ok(operator.get("/admin/api/models"))] == [
            "gpt-4o-mini",
            "legacy",
        ]

    def test_apply_from_a_url(self, live: LiveServer, operator: httpx.Client) -> None:
        with serving_text(PRICE_LIST) as url:
            diff = preview(operator, url=url)
            result = ok(
                operator.post(
                    "/admin/api/catalog/sync/apply", json={"url": url, "diff_id": diff["diff_id"]}
                )
            )
        assert result["applied"]["diff_id"] == diff["diff_id"]
        assert ok(operator.get("/admin/api/models/claude-3-haiku"))["name"] == "claude-3-haiku"

    def test_only_operators_sync(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            response = http.post("/admin/api/catalog/sync/preview", json={"text": PRICE_LIST})
        assert response.status_code == 403
