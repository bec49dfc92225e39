"""Models and prices for operators, over HTTP on both databases: every price change is a new
immutable version, audited, and the old version stays as it was."""

from __future__ import annotations

from sqlalchemy import select

from tallygate.kit.config_version import read as config_version
from tallygate.models.catalog import model_offers, price_versions
from tests.catalog.helpers import add_model, as_user, audit_events, ok, set_prices
from tests.fixtures.server import LiveServer


class TestModels:
    def test_an_operator_creates_a_model_and_reads_it_back(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            created = add_model(http, "gpt-4o-mini", description="small and fast")
            fetched = ok(http.get("/admin/api/models/gpt-4o-mini"))
            listed = ok(http.get("/admin/api/models"))
        assert (
            created
            == fetched
            == {
                "name": "gpt-4o-mini",
                "description": "small and fast",
                "context_length": 128_000,
                "output_cap": 16_384,
                "enabled": True,
                "created_at": "2026-01-01T00:00:00Z",
                "offers": [],
            }
        )
        assert listed == [created]

    def test_model_names_may_contain_slashes_but_not_colons(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            add_model(http, "meta/llama-3.1-8b")
            assert (
                ok(http.get("/admin/api/models/meta/llama-3.1-8b"))["name"] == "meta/llama-3.1-8b"
            )
            refused = http.post(
                "/admin/api/models",
                json={"name": "gpt-4o:official", "context_length": 1, "output_cap": 1},
            )
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_model", "name")
        assert "no ':'" in error["message"]

    def test_sizes_must_be_positive_and_names_unique(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            zero = http.post(
                "/admin/api/models", json={"name": "m", "context_length": 0, "output_cap": 5}
            )
            add_model(http, "m")
            again = http.post(
                "/admin/api/models", json={"name": "m", "context_length": 5, "output_cap": 5}
            )
        assert zero.status_code == 400
        assert zero.json()["error"]["message"] == "context_length must be at least 1 token"
        assert again.status_code == 409
        assert again.json()["error"]["message"] == "a model named 'm' already exists"

    def test_updating_a_model_is_audited_with_before_and_after(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator(email="op@example.com")) as http:
            add_model(http, "m", output_cap=100)
            updated = ok(
                http.patch("/admin/api/models/m", json={"output_cap": 200, "enabled": False})
            )
        assert (updated["output_cap"], updated["enabled"]) == (200, False)
        create, update = audit_events(live)[-2:]
        assert (create.action, create.target, create.actor) == (
            "model.create",
            "model:m",
            "op@example.com",
        )
        assert (update.action, update.before, update.after) == (
            "model.update",
            {"output_cap": 100, "enabled": True},
            {"output_cap": 200, "enabled": False},
        )

    def test_unknown_models_are_404(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            response = http.get("/admin/api/models/nope")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "no model named 'nope'"

    def test_only_operators_manage_models(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            assert http.get("/admin/api/models").status_code == 403
            assert http.post("/admin/api/models", json={}).status_code == 403


class TestPrices:
    def test_prices_are_exact_nanos_per_million_in_the_paying_buckets_currency(
        self, live: LiveServer
    ) -> None:
        with as_user(live, live.make.operator()) as http:
            add_model(http, "gpt-4o-mini")
            set_prices(http, "gpt-4o-mini", "official", "0.15", "0.60", cached_input="0.075")
            model = set_prices(http, "gpt-4o-mini", "routed", "1", "4")
        official, routed = model["offers"]
        assert official == {
            "route_type": "official",
            "api_model_id": "gpt-4o-mini:official",
            "bucket": "credit",
            "currency": "USD",
            "enabled": True,
            "price_version_id": official["price_version_id"],
            "prices": {
                "input_per_m_nanos": 150_000_000,
                "input_per_m": "0.15",
                "output_per_m_nanos": 600_000_000,
                "output_per_m": "0.60",
                "cached_input_per_m_nanos": 75_000_000,
                "cached_input_per_m": "0.075",
            },
        }
        assert (routed["bucket"], routed["currency"]) == ("routed", "CNY")
        # without a cached-input price, cached prompt tokens cost the input price
        assert routed["prices"]["cached_input_per_m_nanos"] == 1_000_000_000

    def test_a_price_change_creates_a_new_version_and_leaves_the_old_one_unchanged(
        self, live: LiveServer
    ) -> None:
        with as_user(live, live.make.operator(email="op@example.com")) as http:
            add_model(http, "m")
            first = set_prices(http, "m", "official", "0.15", "0.60")["offers"][0]
            with live.db.read() as conn:
                old_row = dict(
                    conn.execute(
                        select(price_versions).where(
                            price_versions.c.id == first["price_version_id"]
                        )
                    )
                    .mappings()
                    .one()
                )
            live.clock.advance(60)
            second = set_prices(http, "m", "official", "0.20", "0.80")["offers"][0]
            history = ok(http.get("/admin/api/models/m/prices"))
        assert second["price_version_id"] != first["price_version_id"]
        with live.db.read() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    select(price_versions).order_by(price_versions.c.id)
                ).mappings()
            ]
            current = conn.execute(select(model_offers.c.price_version_id)).scalar_one()
        assert rows[0] == old_row
        assert (rows[0]["input_per_m_nanos"], rows[0]["output_per_m_nanos"]) == (
            150_000_000,
            600_000_000,
        )
        assert (rows[1]["input_per_m_nanos"], rows[1]["source"], rows[1]["created_by"]) == (
            200_000_000,
            "manual",
            "op@example.com",
        )
        assert current == rows[1]["id"]
        assert [
            (v["id"], v["current"], v["prices"]["input_per_m"]) for v in history["versions"]
        ] == [
            (rows[1]["id"], True, "0.20"),
            (rows[0]["id"], False, "0.15"),
        ]
        assert history["versions"][0]["created_at"] == "2026-01-01T00:01:00Z"

    def test_each_price_change_is_audited_with_old_and_new_prices(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            add_model(http, "m")
            set_prices(http, "m", "routed", "1", "2")
            set_prices(http, "m", "routed", "1.5", "2")
        first, second = [e for e in audit_events(live) if e.action == "price.set"]
        assert (first.target, first.before) == ("model:m:routed", None)
        assert first.after["prices"]["input_per_m"] == "1.00"
        assert second.before["prices"]["input_per_m_nanos"] == 1_000_000_000
        assert second.after["prices"]["input_per_m_nanos"] == 1_500_000_000
        assert second.after["currency"] == "CNY"

    def test_setting_the_same_prices_again_creates_no_version(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            add_model(http, "m")
            set_prices(http, "m", "official", "0.15", "0.60")
            with live.db.read() as conn:
                version = config_version(live.ledger.tx(conn))
            set_prices(http, "m", "official", "0.150", "0.6")
        with live.db.read() as conn:
            assert conn.execute(select(price_versions.c.id)).all().__len__() == 1
            assert config_version(live.ledger.tx(conn)) == version

    def test_a_price_change_bumps_the_config_version(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            add_model(http, "m")
            with live.db.read() as conn:
                before = config_version(live.ledger.tx(conn))
            set_prices(http, "m", "official", "1", "2")
        with live.db.read() as conn:
            assert config_version(live.ledger.tx(conn)) == before + 1

    def test_an_offer_can_be_disabled_without_a_new_price_version(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            add_model(http, "m")
            version = set_prices(http, "m", "official", "1", "2")["offers"][0]["price_version_id"]
            offer = set_prices(http, "m", "official", "1", "2", enabled=False)["offers"][0]
        assert (offer["enabled"], offer["price_version_id"]) == (False, version)

    def test_invalid_prices_are_refused_clearly(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            add_model(http, "m")
            cases = [
                ({"input": "-1", "output": "1"}, "prices.input must not be negative"),
                (
                    {"input": "0.0000000001", "output": "1"},
                    "prices.input has more than 9 decimal places: 0.0000000001",
                ),
                (
                    {"input": "1", "output": "1", "currency": "EUR"},
                    "prices: official prices are paid from the credit bucket in USD, not EUR",
                ),
            ]
            responses = [http.put("/admin/api/models/m/offers/official", json=b) for b, _ in cases]
            bad_route = http.put(
                "/admin/api/models/m/offers/cheap", json={"input": "1", "output": "1"}
            )
        for response, (_, message) in zip(responses, cases, strict=True):
            assert response.status_code == 400
            assert response.json()["error"]["message"] == message
        assert bad_route.status_code == 422
        with live.db.read() as conn:
            assert conn.execute(select(price_versions.c.id)).all() == []
