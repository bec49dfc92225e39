"""The operator's charge policy over HTTP on both databases: defaults, validated changes,
stored in settings, audited, and announced to gateway processes by the config version."""

from __future__ import annotations

import httpx
import orjson
from sqlalchemy import select

from tallygate.audit import service as audit
from tallygate.billing.charge_policy import SETTINGS_KEY
from tallygate.kit.config_version import read as config_version
from tallygate.models.catalog import settings_kv
from tallygate.users.service import User
from tests.fixtures.server import LiveServer

DEFAULTS = {
    "rejected": "no_charge",
    "upstream_error": "no_charge",
    "empty_output": "no_charge",
    "client_abort": "charge_received",
    "broken_stream": "charge_received",
}


def as_user(live: LiveServer, user: User) -> httpx.Client:
    return live.client(headers={"Authorization": f"Bearer {live.make.session_token(user)}"})


def stored(live: LiveServer) -> dict[str, str] | None:
    with live.db.read() as conn:
        value = conn.execute(
            select(settings_kv.c.value_json).where(settings_kv.c.key == SETTINGS_KEY)
        ).scalar()
    return None if value is None else orjson.loads(value)  # type: ignore[no-any-return]


class TestChargePolicy:
    def test_shows_the_defaults_and_the_choices_before_anything_is_set(
        self, live: LiveServer
    ) -> None:
        with as_user(live, live.make.operator()) as http:
            body = http.get("/admin/api/charge-policy").json()
        assert {k: body[k] for k in DEFAULTS} == DEFAULTS
        assert body["choices"]["client_abort"] == ["charge_received", "no_charge"]
        assert body["choices"]["rejected"] == ["no_charge"]
        assert stored(live) is None

    def test_a_change_is_stored_audited_and_bumps_the_config_version(
        self, live: LiveServer
    ) -> None:
        with live.db.read() as conn:
            version = config_version(live.ledger.tx(conn))
        with as_user(live, live.make.operator(email="op@example.com")) as http:
            response = http.put(
                "/admin/api/charge-policy",
                json={"client_abort": "no_charge", "reason": "goodwill during the incident"},
            )
            again = http.get("/admin/api/charge-policy").json()
        assert response.status_code == 200, response.text
        expected = {**DEFAULTS, "client_abort": "no_charge"}
        assert {k: again[k] for k in DEFAULTS} == expected
        assert stored(live) == expected
        with live.db.read() as conn:
            tx = live.ledger.tx(conn)
            assert config_version(tx) == version + 1
            assert audit.verify(tx) == []
            (event,) = audit.list_events(tx, limit=1)
        assert (event.action, event.actor, event.source) == (
            "charge_policy.set",
            "op@example.com",
            "operator",
        )
        assert (event.before, event.after) == (DEFAULTS, expected)
        assert event.reason == "goodwill during the incident"

    def test_an_unknown_choice_is_a_clear_400_and_changes_nothing(self, live: LiveServer) -> None:
        with as_user(live, live.make.operator()) as http:
            response = http.put("/admin/api/charge-policy", json={"empty_output": "charge_all"})
            fixed = http.put("/admin/api/charge-policy", json={"upstream_error": "charge_prompt"})
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "policy for empty_output must be one of no_charge, charge_prompt, got 'charge_all'"
        )
        assert fixed.status_code == 400
        assert stored(live) is None

    def test_only_operators_see_or_change_it(self, live: LiveServer) -> None:
        with as_user(live, live.make.user()) as http:
            assert http.get("/admin/api/charge-policy").status_code == 403
            assert http.put("/admin/api/charge-policy", json={}).status_code == 403
