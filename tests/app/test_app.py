"""The application as a whole: startup, health, the OpenAPI document and the sweeper."""

from __future__ import annotations

import time

from tallygate.app import create_app
from tallygate.config import Settings
from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock
from tallygate.state import AppState
from tests.fixtures.server import AppFactory, LiveServer, serving

UNIT = 1_000_000_000


class TestCreateApp:
    def test_building_the_app_touches_nothing_until_startup(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        path = tmp_path / "never-created.db"
        create_app(Settings(database_url=f"sqlite:///{path}"))
        assert not path.exists()

    def test_startup_stores_the_typed_state_and_bootstraps_platform_accounts(
        self, live: LiveServer
    ) -> None:
        state = live.app.state.tallygate
        assert isinstance(state, AppState)
        assert state.clock is live.clock
        assert state.ledger.currencies == {"credit": "USD", "routed": "CNY"}
        with live.db.read() as conn:
            account_id, currency = state.ledger.platform(
                state.ledger.tx(conn), "clearing:sandbox", "routed"
            )
        assert account_id > 0
        assert currency == "CNY"


class TestHealth:
    def test_healthz_is_ok_when_the_database_answers(self, live: LiveServer) -> None:
        with live.client() as http:
            response = http.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "database": "ok"}

    def test_healthz_is_503_when_the_database_does_not_answer(self, live: LiveServer) -> None:
        state: AppState = live.app.state.tallygate
        unreachable = Database("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
        live.app.state.tallygate = AppState(state.settings, unreachable, state.ledger, state.clock)
        try:
            with live.client() as http:
                response = http.get("/healthz")
        finally:
            live.app.state.tallygate = state
            unreachable.dispose()
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "database": "unreachable"}


class TestOpenAPI:
    def test_documents_every_json_api_path(self, live: LiveServer) -> None:
        with live.client() as http:
            document = http.get("/openapi.json").json()
        api_paths = {p for p in document["paths"] if p.startswith(("/api/", "/admin/api/"))}
        assert api_paths == {
            "/admin/api/adjustments",
            "/admin/api/catalog/sync/apply",
            "/admin/api/catalog/sync/preview",
            "/admin/api/channels",
            "/admin/api/channels/{channel_id}",
            "/admin/api/channels/{channel_id}/disable",
            "/admin/api/channels/{channel_id}/enable",
            "/admin/api/channels/{channel_id}/models",
            "/admin/api/channels/{channel_id}/test",
            "/admin/api/charge-policy",
            "/admin/api/credits/campaigns",
            "/admin/api/credits/campaigns/{campaign_id}",
            "/admin/api/credits/campaigns/{campaign_id}/codes",
            "/admin/api/credits/campaigns/{campaign_id}/disable",
            "/admin/api/credits/campaigns/{campaign_id}/enable",
            "/admin/api/credits/campaigns/{campaign_id}/redemptions",
            "/admin/api/credits/campaigns/{campaign_id}/redemptions.csv",
            "/admin/api/credits/campaigns/{campaign_id}/usage",
            "/admin/api/credits/codes/{code_id}",
            "/admin/api/credits/codes/{code_id}/disable",
            "/admin/api/exports/statement",
            "/admin/api/exports/{name}",
            "/admin/api/keys",
            "/admin/api/keys/{key_id}/revoke",
            "/admin/api/models",
            "/admin/api/models/{name}",
            "/admin/api/models/{name}/offers/{route_type}",
            "/admin/api/models/{name}/prices",
            "/admin/api/payments/jobs",
            "/admin/api/payments/jobs/{job_id}/requeue",
            "/admin/api/payments/orders",
            "/admin/api/payments/orders/{order_id}",
            "/admin/api/payments/orders/{order_id}/approve",
            "/admin/api/payments/orders/{order_id}/override",
            "/admin/api/payments/orders/{order_id}/refunds",
            "/admin/api/payments/orders/{order_id}/reject",
            "/admin/api/payments/refunds",
            "/admin/api/payments/refunds/{refund_id}/decision",
            "/admin/api/receipts",
            "/admin/api/receipts/{request_id}",
            "/admin/api/route-health",
            "/admin/api/users",
            "/admin/api/users/{user_id}/wallet",
            "/api/adjustments",
            "/api/auth/login",
            "/api/auth/logout",
            "/api/credits/redeem",
            "/api/credits/redemptions",
            "/api/exports/statement",
            "/api/exports/{name}",
            "/api/keys",
            "/api/keys/{key_id}",
            "/api/keys/{key_id}/revoke",
            "/api/marketplace",
            "/api/me",
            "/api/payments/options",
            "/api/payments/orders",
            "/api/payments/orders/{order_id}",
            "/api/payments/orders/{order_id}/cancel",
            "/api/payments/orders/{order_id}/receipt",
            "/api/payments/orders/{order_id}/state",
            "/api/payments/orders/{order_id}/transfer",
            "/api/payments/webhooks/stripe",
            "/api/payments/webhooks/wechat",
            "/api/receipts",
            "/api/receipts/{request_id}",
            "/api/receipts/{request_id}/adjustments",
            "/api/research/estimate",
            "/api/research/runs",
            "/api/research/runs/{run_id}",
            "/api/research/runs/{run_id}/events",
            "/api/research/runs/{run_id}/report",
            "/api/research/runs/{run_id}/report.html",
            "/api/research/runs/{run_id}/report.md",
            "/api/wallet",
            "/api/wallet/ledger",
        }
        assert set(document["paths"]["/api/auth/login"]) == {"post"}
        assert set(document["paths"]["/api/keys"]) == {"get", "post"}
        assert set(document["paths"]["/api/keys/{key_id}"]) == {"get", "patch"}
        assert set(document["paths"]["/admin/api/models/{name}"]) == {"get", "patch"}
        assert set(document["paths"]["/admin/api/channels/{channel_id}"]) == {"get", "patch"}
        assert set(document["paths"]["/admin/api/charge-policy"]) == {"get", "put"}
        assert document["info"]["title"] == "Tallygate"


class TestSweeper:
    def test_expires_overdue_holds_in_the_background(
        self, make_app: AppFactory, db: Database, clock: FrozenClock, live: LiveServer
    ) -> None:
        user = live.make.user()
        live.make.topup(user.id, 10 * UNIT)
        live.make.hold(user.id, 4 * UNIT, key="request-1")
        clock.advance(600 + 60 + 1)  # TTL + grace + 1 s
        deadline = time.monotonic() + 10
        while True:
            with db.read() as conn:
                held = live.ledger.balance(live.ledger.tx(conn), user.id, "credit").held_nanos
            if held == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert held == 0

    def test_leaves_holds_within_their_ttl_alone(
        self, make_app: AppFactory, db: Database, clock: FrozenClock, live: LiveServer
    ) -> None:
        user = live.make.user()
        live.make.topup(user.id, 10 * UNIT)
        live.make.hold(user.id, 4 * UNIT, key="request-1")
        clock.advance(600 + 60 - 1)
        time.sleep(0.3)  # several sweeper ticks (interval 0.05 s)
        with db.read() as conn:
            held = live.ledger.balance(live.ledger.tx(conn), user.id, "credit").held_nanos
        assert held == 4 * UNIT

    def test_a_disabled_sweeper_starts_and_stops_cleanly(self, make_app: AppFactory) -> None:
        app = make_app(sweeper_interval_seconds=0)
        with serving(app) as base_url:
            assert base_url.startswith("http://127.0.0.1:")
