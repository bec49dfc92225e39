"""``tallygate demo``'s seed: everything the README's snippet needs, idempotent across starts,
and channels that follow the address the demo serves on. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from tallygate.channels import repository as channels_repo
from tallygate.channels import service as channels
from tallygate.db.engine import Database
from tallygate.demo.seed import MODELS, STARTER, seed, upstream_url
from tallygate.kit.clock import FrozenClock, to_epoch_us
from tallygate.ledger import Ledger
from tests.fixtures.server import settings_for

KEY = "tg-demo-fixed-key-0123456789"


def start(db: Database, ledger: Ledger, clock: FrozenClock, base_url: str) -> str:
    settings = settings_for(db, secret_key="demo-seed-tests-secret-key-0123456789")
    with db.begin() as conn:
        made = seed(
            conn,
            ledger,
            settings,
            base_url=base_url,
            now_us=to_epoch_us(clock.now()),
            fixed_key=KEY,
        )
    return made.api_key


def channel_urls(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return {c.name: c.base_url for c in channels.list_channels(conn)}


def test_one_official_and_one_routed_model_a_funded_user_and_the_fixed_key(
    db: Database, ledger: Ledger, clock: FrozenClock
) -> None:
    assert start(db, ledger, clock, "http://127.0.0.1:8000") == KEY
    with db.read() as conn:
        routes = conn.execute(
            text("SELECT route_type FROM model_offers WHERE enabled = 1 ORDER BY route_type")
        ).scalars()
        assert list(routes) == ["official", "routed"]
        found = conn.execute(
            text("SELECT COUNT(*) FROM api_keys WHERE key_hash = :h AND revoked_at IS NULL"),
            {"h": hashlib.sha256(KEY.encode()).hexdigest()},
        ).scalar_one()
        assert found == 1
    assert {route for _, _, route, *_ in MODELS} == {"official", "routed"}
    assert channel_urls(db) == {
        "demo-official": "http://127.0.0.1:8000/demo-upstream/v1",
        "demo-routed": "http://127.0.0.1:8000/demo-upstream/v1",
    }
    assert all(amount > 0 for amount in STARTER.values())


def test_starting_again_changes_nothing(db: Database, ledger: Ledger, clock: FrozenClock) -> None:
    start(db, ledger, clock, "http://127.0.0.1:8000")
    with db.read() as conn:
        before = conn.execute(text("SELECT COUNT(*) FROM entries")).scalar_one()
        keys_before = conn.execute(text("SELECT COUNT(*) FROM api_keys")).scalar_one()
    clock.advance(60)
    start(db, ledger, clock, "http://127.0.0.1:8000")
    with db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM entries")).scalar_one() == before
        assert conn.execute(text("SELECT COUNT(*) FROM api_keys")).scalar_one() == keys_before
        assert conn.execute(text("SELECT COUNT(*) FROM channels")).scalar_one() == 2


def test_started_again_on_another_port_the_channels_follow_it(
    db: Database, ledger: Ledger, clock: FrozenClock
) -> None:
    start(db, ledger, clock, "http://127.0.0.1:8000")
    start(db, ledger, clock, "http://127.0.0.1:8080")
    assert set(channel_urls(db).values()) == {"http://127.0.0.1:8080/demo-upstream/v1"}
    with db.read() as conn:
        channel_id = channels_repo.channel_id_by_name(conn, "demo-official")
        actions = conn.execute(
            text("SELECT action FROM audit_events WHERE target = :t ORDER BY id"),
            {"t": f"channel:{channel_id}"},
        ).scalars()
        assert "channel.update" in list(actions)


@pytest.mark.parametrize(
    ("served", "reached"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/demo-upstream/v1"),
        ("http://0.0.0.0:9000", "http://127.0.0.1:9000/demo-upstream/v1"),
        ("http://[::]:9000", "http://127.0.0.1:9000/demo-upstream/v1"),
        ("http://[::1]:9000/", "http://[::1]:9000/demo-upstream/v1"),
        ("http://demo.lan:8000", "http://demo.lan:8000/demo-upstream/v1"),
    ],
)
def test_a_wildcard_bind_address_is_reached_through_loopback(served: str, reached: str) -> None:
    assert upstream_url(served) == reached
