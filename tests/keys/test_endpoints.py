"""API keys over HTTP against a running server, on both databases: shown once, stored as a
hash, scopes and limits validated, private to their owner, revocable once."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from sqlalchemy import select, update

from tallygate.audit import service as audit
from tallygate.kit.config_version import read as config_version
from tallygate.models.keys import api_keys, key_spend
from tallygate.users.service import User
from tests.fixtures.server import LiveServer

UNIT = 1_000_000_000


def as_user(live: LiveServer, user: User) -> httpx.Client:
    return live.client(headers={"Authorization": f"Bearer {live.make.session_token(user)}"})


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/api/keys", json={"label": "laptop", **body})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def stored_keys(live: LiveServer) -> list[dict[str, Any]]:
    with live.db.read() as conn:
        return [dict(r) for r in conn.execute(select(api_keys)).mappings()]


class TestCreate:
    def test_the_full_key_is_shown_once_and_only_its_hash_is_stored(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            created = create(http, project="search")
            listed = http.get("/api/keys").json()["items"]
            fetched = http.get(f"/api/keys/{created['id']}").json()
        key = created["key"]
        assert key.startswith("tg-") and len(key) == 43
        assert all(c.isalnum() or c in "-_" for c in key[3:])
        assert created["prefix"] == key[:10]
        (row,) = stored_keys(live)
        assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
        assert row["prefix"] == key[:10]
        assert key not in str(row)
        assert key not in str(listed) and key not in str(fetched)
        assert "key" not in listed[0] and "key" not in fetched
        assert listed[0]["prefix"] == fetched["prefix"] == key[:10]

    def test_two_keys_never_collide(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            keys = {create(http)["key"] for _ in range(5)}
        assert len(keys) == 5

    def test_stores_scopes_limits_and_both_spend_rows(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            created = create(
                http,
                label="batch job",
                project="etl",
                allowed_models=["gpt-4o*", "claude-*"],
                allowed_route_types=["routed"],
                rpm_limit=60,
                tpm_limit=100_000,
                expires_at="2026-02-01T00:00:00Z",
                spend_limits={"routed": {"total": "50", "daily": "2.5"}},
            )
        assert created["user_id"] == user.id
        assert created["label"] == "batch job"
        assert created["project"] == "etl"
        assert created["allowed_models"] == ["gpt-4o*", "claude-*"]
        assert created["allowed_route_types"] == ["routed"]
        assert created["default_route_type"] == "routed"
        assert (created["rpm_limit"], created["tpm_limit"]) == (60, 100_000)
        assert created["expires_at"] == "2026-02-01T00:00:00Z"
        assert created["status"] == "active"
        credit, routed = created["spend"]
        assert credit["bucket"] == "credit" and credit["currency"] == "USD"
        assert credit["limit_total_nanos"] is None and credit["limit_daily"] is None
        assert routed["currency"] == "CNY"
        assert (routed["limit_total_nanos"], routed["limit_total"]) == (50 * UNIT, "50.00")
        assert (routed["limit_daily_nanos"], routed["limit_daily"]) == (2_500_000_000, "2.50")
        with live.db.read() as conn:
            rows = conn.execute(
                select(key_spend.c.bucket, key_spend.c.limit_total_nanos).order_by(
                    key_spend.c.bucket
                )
            ).all()
        assert [tuple(r) for r in rows] == [("credit", None), ("routed", 50 * UNIT)]

    def test_the_default_route_type_is_routed_when_allowed_else_the_only_one(
        self, live: LiveServer
    ) -> None:
        with as_user(live, live.make.user()) as http:
            both = create(http)
            official = create(http, allowed_route_types=["official"])
            chosen = create(http, default_route_type="official")
        assert both["default_route_type"] == "routed"
        assert both["allowed_route_types"] == ["official", "routed"]
        assert official["default_route_type"] == "official"
        assert chosen["default_route_type"] == "official"

    def test_creating_a_key_bumps_the_config_version(self, live: LiveServer) -> None:
        with live.db.read() as conn:
            before = config_version(live.ledger.tx(conn))
        with as_user(live, live.make.user()) as http:
            create(http)
        with live.db.read() as conn:
            assert config_version(live.ledger.tx(conn)) == before + 1


class TestValidation:
    def refused(self, live: LiveServer, **body: Any) -> dict[str, Any]:
        with as_user(live, live.make.user()) as http:
            response = http.post("/api/keys", json={"label": "k", **body})
        assert response.status_code == 400, response.text
        assert stored_keys(live) == []
        return response.json()["error"]  # type: ignore[no-any-return]

    def test_route_types_must_not_be_empty(self, live: LiveServer) -> None:
        error = self.refused(live, allowed_route_types=[])
        assert error["code"] == "invalid_scope"
        assert error["param"] == "allowed_route_types"
        assert "at least one of: official, routed" in error["message"]

    def test_the_default_route_type_must_be_allowed(self, live: LiveServer) -> None:
        error = self.refused(live, allowed_route_types=["routed"], default_route_type="official")
        assert error["param"] == "default_route_type"
        assert error["message"] == (
            "default_route_type 'official' is not among the allowed route types (routed)"
        )

    def test_model_patterns_may_not_name_a_route_suffix(self, live: LiveServer) -> None:
        error = self.refused(live, allowed_models=["gpt-4o:official"])
        assert error["param"] == "allowed_models"
        assert "invalid model pattern 'gpt-4o:official'" in error["message"]

    def test_model_patterns_may_not_be_blank(self, live: LiveServer) -> None:
        assert self.refused(live, allowed_models=["  "])["code"] == "invalid_scope"

    def test_rate_limits_are_at_least_one(self, live: LiveServer) -> None:
        error = self.refused(live, rpm_limit=0)
        assert (error["code"], error["param"]) == ("invalid_limit", "rpm_limit")
        assert error["message"] == "rpm_limit must be at least 1, or null for no limit"
        assert self.refused(live, tpm_limit=-5)["param"] == "tpm_limit"

    def test_the_expiry_must_be_in_the_future(self, live: LiveServer) -> None:
        # The server's clock is the test's: 2026-01-01T00:00:00Z.
        error = self.refused(live, expires_at="2025-12-31T23:59:59Z")
        assert (error["param"], error["message"]) == (
            "expires_at",
            "expires_at must be in the future",
        )

    def test_spend_limits_are_exact_non_negative_decimals(self, live: LiveServer) -> None:
        error = self.refused(live, spend_limits={"credit": {"total": "1.0000000001"}})
        assert error["param"] == "spend_limits.credit.total"
        assert "more than 9 decimal places" in error["message"]
        error = self.refused(live, spend_limits={"routed": {"daily": "-1"}})
        assert error["message"] == "spend_limits.routed.daily must not be negative"
        error = self.refused(live, spend_limits={"credit": {"daily": "ten"}})
        assert error["message"] == "spend_limits.credit.daily is not a number: 'ten'"

    def test_the_label_must_not_be_blank(self, live: LiveServer) -> None:
        assert self.refused(live, label="   ")["param"] == "label"


class TestOwnership:
    def test_a_user_lists_only_their_own_keys(self, live: LiveServer) -> None:
        ann, bob = live.make.user(), live.make.user()
        with as_user(live, ann) as http:
            mine = create(http, label="ann's")
        with as_user(live, bob) as http:
            create(http, label="bob's")
        with as_user(live, ann) as http:
            items = http.get("/api/keys").json()["items"]
        assert [k["id"] for k in items] == [mine["id"]]

    def test_another_users_key_is_not_found_for_get_patch_and_revoke(
        self, live: LiveServer
    ) -> None:
        ann, bob = live.make.user(), live.make.user()
        with as_user(live, ann) as http:
            key_id = create(http)["id"]
        with as_user(live, bob) as http:
            responses = [
                http.get(f"/api/keys/{key_id}"),
                http.patch(f"/api/keys/{key_id}", json={"label": "mine now"}),
                http.post(f"/api/keys/{key_id}/revoke"),
            ]
        for response in responses:
            assert response.status_code == 404
            assert response.json()["error"]["message"] == f"no API key with id {key_id}"
        (row,) = stored_keys(live)
        assert (row["label"], row["revoked_at"]) == ("laptop", None)

    def test_keys_need_a_login(self, live: LiveServer) -> None:
        with live.client() as http:
            assert http.get("/api/keys").status_code == 401


class TestUpdate:
    def test_changes_label_project_scopes_and_rate_limits(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            key = create(http, rpm_limit=10)
            response = http.patch(
                f"/api/keys/{key['id']}",
                json={
                    "label": "renamed",
                    "project": "p2",
                    "allowed_models": ["gemini-*"],
                    "allowed_route_types": ["official"],
                    "rpm_limit": None,
                },
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["label"], body["project"]) == ("renamed", "p2")
        assert body["allowed_models"] == ["gemini-*"]
        # routed is no longer allowed, so the default follows the only allowed route type
        assert (body["allowed_route_types"], body["default_route_type"]) == (
            ["official"],
            "official",
        )
        assert body["rpm_limit"] is None

    def test_changes_spend_limits_without_touching_the_counters(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            key = create(http, spend_limits={"credit": {"total": "10", "daily": "1"}})
            with live.db.begin() as conn:  # as if the ledger's holds had settled 3.5 today
                conn.execute(
                    update(key_spend)
                    .where(key_spend.c.key_id == key["id"], key_spend.c.bucket == "credit")
                    .values(total_spent_nanos=3_500_000_000, day=20260101, day_spent_nanos=7)
                )
            response = http.patch(
                f"/api/keys/{key['id']}", json={"spend_limits": {"credit": {"daily": None}}}
            )
        assert response.status_code == 200, response.text
        credit = response.json()["spend"][0]
        assert credit["limit_total"] == "10.00"  # omitted: kept
        assert credit["limit_daily_nanos"] is None  # null: removed
        assert (credit["total_spent_nanos"], credit["total_spent"]) == (3_500_000_000, "3.50")
        assert (credit["today_spent_nanos"], credit["today_spent"]) == (7, "0.000000007")

    def test_todays_spend_is_zero_on_a_new_utc_day(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            key = create(http)
            with live.db.begin() as conn:
                conn.execute(
                    update(key_spend)
                    .where(key_spend.c.key_id == key["id"], key_spend.c.bucket == "routed")
                    .values(total_spent_nanos=9, day=20251231, day_spent_nanos=9)
                )
            routed = http.get(f"/api/keys/{key['id']}").json()["spend"][1]
        assert (routed["total_spent_nanos"], routed["today_spent_nanos"]) == (9, 0)

    def test_an_invalid_update_changes_nothing(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            key = create(http)
            response = http.patch(
                f"/api/keys/{key['id']}",
                json={
                    "label": "new",
                    "allowed_route_types": ["official"],
                    "default_route_type": "routed",
                },
            )
            after = http.get(f"/api/keys/{key['id']}").json()
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "default_route_type"
        assert after["label"] == "laptop"


class TestRevoke:
    def test_revoking_is_idempotent_and_keeps_the_first_time(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            key = create(http)
            first = http.post(f"/api/keys/{key['id']}/revoke")
            live.clock.advance(60)
            second = http.post(f"/api/keys/{key['id']}/revoke")
        assert first.status_code == second.status_code == 200
        assert first.json()["status"] == "revoked"
        assert first.json()["revoked_at"] == second.json()["revoked_at"] == "2026-01-01T00:00:00Z"

    def test_an_expired_key_shows_as_expired(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            key = create(http, expires_at="2026-01-01T00:30:00Z")
            assert http.get(f"/api/keys/{key['id']}").json()["status"] == "active"
            live.clock.advance(1800)
            assert http.get(f"/api/keys/{key['id']}").json()["status"] == "expired"


class TestAdmin:
    def test_operators_list_keys_of_one_user_or_all(self, live: LiveServer) -> None:
        ann, bob, operator = live.make.user(), live.make.user(), live.make.operator()
        with as_user(live, ann) as http:
            a = create(http)
        with as_user(live, bob) as http:
            b = create(http)
        with as_user(live, operator) as http:
            everyone = http.get("/admin/api/keys").json()["items"]
            only_bob = http.get("/admin/api/keys", params={"user_id": bob.id}).json()["items"]
        assert [k["id"] for k in everyone] == [a["id"], b["id"]]
        assert [(k["id"], k["user_id"]) for k in only_bob] == [(b["id"], bob.id)]
        assert a["key"] not in str(everyone)

    def test_an_operator_revocation_is_audited_once(self, live: LiveServer) -> None:
        user, operator = live.make.user(), live.make.operator(email="op@example.com")
        with as_user(live, user) as http:
            key = create(http)
        with as_user(live, operator) as http:
            first = http.post(
                f"/admin/api/keys/{key['id']}/revoke", json={"reason": "leaked in a repo"}
            )
            again = http.post(f"/admin/api/keys/{key['id']}/revoke")
        assert first.status_code == again.status_code == 200
        assert first.json()["status"] == "revoked"
        with live.db.read() as conn:
            tx = live.ledger.tx(conn)
            events = [e for e in audit.list_events(tx) if e.action == "key.revoke"]
            assert audit.verify(tx) == []
        (event,) = events
        assert (event.actor, event.source, event.target) == (
            "op@example.com",
            "operator",
            f"key:{key['id']}",
        )
        assert event.reason == "leaked in a repo"
        assert event.before["revoked"] is False and event.after["revoked"] is True

    def test_users_cannot_use_the_admin_endpoints(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            assert http.get("/admin/api/keys").status_code == 403
