"""The marketplace over HTTP on both databases: enabled, priced offers with their bucket and
prices, a route health summary from the last 15 minutes of receipts, and which of the caller's
keys may use each offer."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from sqlalchemy import insert

from tallygate.kit.clock import to_epoch_us
from tallygate.models.receipts import receipts
from tests.catalog.helpers import add_model, as_user, ok, set_prices
from tests.fixtures.server import LiveServer

_request_ids = itertools.count(1)


def receipt(
    live: LiveServer,
    *,
    model: str,
    route_type: str,
    status: str,
    latency_ms: int,
    age_seconds: int = 60,
    client_disconnected: bool = False,
) -> None:
    now = to_epoch_us(live.clock.now())
    with live.db.begin() as conn:
        conn.execute(
            insert(receipts).values(
                request_id=f"req-{next(_request_ids)}",
                created_at=now - age_seconds * 1_000_000,
                user_id=1,
                endpoint="chat.completions",
                model=model,
                route_type=route_type,
                channel="openai-primary",
                status=status,
                http_status=200 if status == "ok" else 502,
                latency_us=latency_ms * 1000,
                client_disconnected=int(client_disconnected),
            )
        )


def catalog(live: LiveServer) -> None:
    with as_user(live, live.make.operator()) as http:
        add_model(http, "gpt-4o-mini", description="small")
        set_prices(http, "gpt-4o-mini", "official", "0.15", "0.60", cached_input="0.075")
        set_prices(http, "gpt-4o-mini", "routed", "1", "4")
        add_model(http, "claude-3-haiku")
        set_prices(http, "claude-3-haiku", "routed", "2", "10")
        set_prices(http, "claude-3-haiku", "official", "0.25", "1.25", enabled=False)
        add_model(http, "retired", enabled=False)
        set_prices(http, "retired", "official", "1", "1")
        add_model(http, "unpriced")
        ok(
            http.post(
                "/admin/api/channels",
                json={
                    "name": "internal-openai-eu",
                    "label": "OpenAI EU",
                    "base_url": "http://127.0.0.1:9/v1",
                    "route_type": "official",
                },
            ),
            201,
        )


def key(http: httpx.Client, **body: Any) -> dict[str, Any]:
    return ok(http.post("/api/keys", json={"label": "k", **body}), 201)  # type: ignore[no-any-return]


def offers(market: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["api_model_id"]: o for m in market["models"] for o in m["offers"]}


class TestMarketplace:
    def test_lists_enabled_priced_offers_with_bucket_currency_and_prices(
        self, live: LiveServer
    ) -> None:
        catalog(live)
        with as_user(live, live.make.user()) as http:
            market = ok(http.get("/api/marketplace"))
        assert [m["name"] for m in market["models"]] == ["claude-3-haiku", "gpt-4o-mini"]
        assert list(offers(market)) == [
            "claude-3-haiku:routed",
            "gpt-4o-mini:official",
            "gpt-4o-mini:routed",
        ]
        official = offers(market)["gpt-4o-mini:official"]
        assert (official["bucket"], official["currency"], official["route_type"]) == (
            "credit",
            "USD",
            "official",
        )
        assert official["prices"]["input_per_m"] == "0.15"
        assert official["prices"]["cached_input_per_m_nanos"] == 75_000_000
        assert isinstance(official["price_version_id"], int)
        routed = offers(market)["gpt-4o-mini:routed"]
        assert (routed["bucket"], routed["currency"]) == ("routed", "CNY")
        gpt = market["models"][1]
        assert (gpt["description"], gpt["context_length"], gpt["output_cap"]) == (
            "small",
            128_000,
            16_384,
        )

    def test_usable_by_keys_follows_model_globs_and_route_types(self, live: LiveServer) -> None:
        catalog(live)
        user, other = live.make.user(), live.make.user()
        with as_user(live, other) as http:
            key(http, label="someone else's")
        with as_user(live, user) as http:
            gpt = key(http, label="gpt only", allowed_models=["gpt-*"])
            key(http, label="routed only", allowed_route_types=["routed"])
            key(http, label="haiku", allowed_models=["claude-3-haiku"])
            revoked = key(http, label="revoked")
            ok(http.post(f"/api/keys/{revoked['id']}/revoke"))
            key(http, label="expired", expires_at="2026-01-01T00:10:00Z")
            live.clock.advance(600)
            market = offers(ok(http.get("/api/marketplace")))

        def usable(api_model_id: str) -> list[str]:
            return [k["label"] for k in market[api_model_id]["usable_by_keys"]]

        assert usable("gpt-4o-mini:official") == ["gpt only"]
        assert usable("gpt-4o-mini:routed") == ["gpt only", "routed only"]
        assert usable("claude-3-haiku:routed") == ["routed only", "haiku"]
        first = market["gpt-4o-mini:official"]["usable_by_keys"][0]
        assert first == {"id": gpt["id"], "prefix": gpt["prefix"], "label": "gpt only"}

    def test_route_health_summarises_the_last_15_minutes_of_receipts(
        self, live: LiveServer
    ) -> None:
        catalog(live)
        for latency in (100, 300, 200):
            receipt(
                live, model="gpt-4o-mini", route_type="official", status="ok", latency_ms=latency
            )
        receipt(live, model="gpt-4o-mini", route_type="official", status="failed", latency_ms=5000)
        # a stream the client cut short was served: it counts as a success
        receipt(
            live,
            model="gpt-4o-mini",
            route_type="official",
            status="partial",
            latency_ms=400,
            client_disconnected=True,
        )
        # refused before any upstream call: says nothing about the route
        receipt(live, model="gpt-4o-mini", route_type="official", status="rejected", latency_ms=1)
        # older than 15 minutes: outside the window
        receipt(
            live,
            model="gpt-4o-mini",
            route_type="official",
            status="failed",
            latency_ms=9000,
            age_seconds=15 * 60 + 1,
        )
        receipt(live, model="gpt-4o-mini", route_type="routed", status="ok", latency_ms=80)
        receipt(live, model="gpt-4o-mini", route_type="routed", status="partial", latency_ms=50)
        with as_user(live, live.make.user()) as http:
            response = http.get("/api/marketplace")
        market = offers(ok(response))
        assert market["gpt-4o-mini:official"]["health"] == {
            "window_seconds": 900,
            "requests": 5,
            "succeeded": 4,
            "success_rate": 0.8,
            "median_latency_ms": 250,  # median of 100, 200, 300, 400
        }
        assert market["gpt-4o-mini:routed"]["health"] == {
            "window_seconds": 900,
            "requests": 2,
            "succeeded": 1,
            "success_rate": 0.5,
            "median_latency_ms": 80,
        }
        assert market["claude-3-haiku:routed"]["health"] == {
            "window_seconds": 900,
            "requests": 0,
            "succeeded": 0,
            "success_rate": None,
            "median_latency_ms": None,
        }
        # users see models and route types, never channels or upstreams
        for hidden in ("openai-primary", "internal-openai-eu", "OpenAI EU", "127.0.0.1:9"):
            assert hidden not in response.text

    def test_needs_a_login(self, live: LiveServer) -> None:
        with live.client() as http:
            assert http.get("/api/marketplace").status_code == 401
