"""A small world for the export tests: one model offered on both routes, a routed primary and
backup channel and an official channel — all on the fault-injecting test upstream — three users
(two with keys, one operator), and a real gateway server started after the world is seeded.

Every expected value in the tests comes from here (the configured prices, labels and top-ups)
or from the test upstream's record of the true usage it sent — never from the receipts table."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from tests.fixtures.factories import Factory
from tests.fixtures.server import AppFactory, make_app, serving, settings_for
from tests.fixtures.upstream_server import UpstreamServer, upstream, upstream_server

from tallygate.catalog import service as catalog
from tallygate.catalog.schemas import ModelCreate, OfferPut
from tallygate.channels import service as channels
from tallygate.channels.schemas import ChannelCreate, MappingsPut, ModelMapping
from tallygate.db.engine import Database
from tallygate.keys import service as keys
from tallygate.keys.schemas import KeyCreate
from tallygate.kit.clock import FrozenClock, to_epoch_us
from tallygate.ledger import Ledger
from tallygate.users.service import User

__all__ = ["make_app", "upstream", "upstream_server", "world"]

UNIT = 1_000_000_000
MODEL = "exp-chat"
UPSTREAM_MODEL = {"routed": "exp-chat-routed-up", "official": "exp-chat-official-up"}
# Prices per million tokens, deliberately odd so the single round-up on the total matters.
PRICES = {
    "official": ("1.234567891", "9.876543211", "0.5"),
    "routed": ("0.300000007", "0.600000013", "0.300000007"),
}
PRIMARY, BACKUP, OFFICIAL = "Primary routed (public)", "Backup routed (public)", "Official line"
EVIL_LABEL = '=HYPERLINK("http://x","y")'
EVIL_PROJECT = "+cmd|' /C calc'!A0"
TOPUP = {"credit": 50 * UNIT, "routed": 80 * UNIT}


def nanos(decimal_text: str) -> int:
    return int(Decimal(decimal_text) * UNIT)


def expected_charge(route: str, input_tokens: int, output_tokens: int, cached: int = 0) -> int:
    """ceil(((in − cached) × in_price + cached × cached_price + out × out_price) / 10^6)."""
    pin, pout, pcached = (nanos(p) for p in PRICES[route])
    exact = (input_tokens - cached) * pin + cached * pcached + output_tokens * pout
    return -(-exact // 1_000_000)


@dataclass
class Key:
    id: int
    secret: str
    label: str
    project: str
    user: User


@dataclass
class World:
    base_url: str
    db: Database
    ledger: Ledger
    clock: FrozenClock
    make: Factory
    upstream: UpstreamServer
    alice: User
    bob: User
    operator: User
    alice_key: Key
    """Label and project are spreadsheet formulas, to be neutralised."""
    alice_plain: Key
    bob_key: Key
    price_versions: dict[str, int] = field(default_factory=dict)
    tokens: dict[int, str] = field(default_factory=dict)

    def client(self, user: User | None = None, **kwargs: Any) -> httpx.Client:
        headers = {}
        if user is not None:
            if user.id not in self.tokens:
                self.tokens[user.id] = self.make.session_token(user)
            headers["Authorization"] = f"Bearer {self.tokens[user.id]}"
        kwargs.setdefault("timeout", 20)
        return httpx.Client(base_url=self.base_url, headers=headers, **kwargs)

    def chat(self, key: Key, model: str = MODEL, **body: Any) -> httpx.Response:
        payload = {"model": model, "messages": [{"role": "user", "content": "export me"}], **body}
        with httpx.Client(base_url=self.base_url, timeout=20) as http:
            return http.post(
                "/v1/chat/completions",
                json=payload,
                headers={"Authorization": f"Bearer {key.secret}"},
            )

    def export(
        self, name: str, user: User, fmt: str = "csv", admin: bool = False, **params: Any
    ) -> bytes:
        path = f"/admin/api/exports/{name}" if admin else f"/api/exports/{name}"
        with self.client(user) as http:
            response = http.get(path, params={"format": fmt, **params})
        assert response.status_code == 200, response.text
        return response.content

    def csv_rows(
        self, name: str, user: User, **params: Any
    ) -> tuple[list[str], list[dict[str, str]]]:
        return parse_csv(self.export(name, user, "csv", **params))

    def jsonl_rows(self, name: str, user: User, **params: Any) -> list[dict[str, Any]]:
        return parse_jsonl(self.export(name, user, "jsonl", **params))


def parse_csv(raw: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def parse_jsonl(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in raw.splitlines() if line]


def _seed(
    db: Database, ledger: Ledger, make: Factory, up: UpstreamServer, secret_key: str
) -> dict[str, Any]:
    now = to_epoch_us(ledger.clock.now())
    actor = catalog.Actor(name="exports-test", source="system")
    versions: dict[str, int] = {}
    with db.begin() as conn:
        catalog.create_model(
            conn,
            ModelCreate(name=MODEL, context_length=128_000, output_cap=4096),
            actor=actor,
            now_us=now,
            currencies=ledger.currencies,
        )
        for route, (pin, pout, pcached) in PRICES.items():
            out = catalog.put_offer(
                conn,
                MODEL,
                route,
                OfferPut(input=pin, output=pout, cached_input=pcached),
                actor=actor,
                now_us=now,
                currencies=ledger.currencies,
            )
            offer = next(o for o in out.offers if o.route_type == route)
            assert offer.price_version_id is not None
            versions[route] = offer.price_version_id
        for name, label, route, priority in (
            ("exp-primary", PRIMARY, "routed", 10),
            ("exp-backup", BACKUP, "routed", 0),
            ("exp-official", OFFICIAL, "official", 0),
        ):
            channel = channels.create_channel(
                conn,
                ChannelCreate(
                    name=name,
                    label=label,
                    base_url=up.base_url,
                    secret=up.api_key or "",
                    route_type=route,  # type: ignore[arg-type]
                    priority=priority,
                    timeout_seconds=20,
                ),
                operator="exports-test",
                secret_key=secret_key,
                now_us=now,
            )
            channels.put_mappings(
                conn,
                channel.id,
                MappingsPut(
                    models=[ModelMapping(model=MODEL, upstream_model=UPSTREAM_MODEL[route])]
                ),
                operator="exports-test",
                now_us=now,
            )
    return versions


def _key(db: Database, ledger: Ledger, user: User, label: str, project: str) -> Key:
    with db.begin() as conn:
        created = keys.create_key(
            conn,
            user_id=user.id,
            body=KeyCreate(label=label, project=project, default_route_type="routed"),
            currencies=ledger.currencies,
            now_us=to_epoch_us(ledger.clock.now()),
        )
    return Key(created.id, created.key, label, project, user)


@pytest.fixture
def world(
    make_app: AppFactory,
    db: Database,
    ledger: Ledger,
    clock: FrozenClock,
    upstream: UpstreamServer,
) -> Iterator[World]:
    make = Factory(db, ledger)
    secret_key = settings_for(db).secret_key
    versions = _seed(db, ledger, make, upstream, secret_key)
    alice = make.user(email="alice@example.com")
    bob = make.user(email="bob@example.com")
    operator = make.operator(email="ops@example.com")
    for user in (alice, bob):
        for bucket, amount in TOPUP.items():
            make.topup(user.id, amount, bucket=bucket)
    alice_key = _key(db, ledger, alice, EVIL_LABEL, EVIL_PROJECT)
    alice_plain = _key(db, ledger, alice, "alice plain", "billing")
    bob_key = _key(db, ledger, bob, "bob's key", "recherche 研究")
    app = make_app(gateway_max_attempts=3)
    with serving(app) as base_url:
        yield World(
            base_url,
            db,
            ledger,
            clock,
            make,
            upstream,
            alice,
            bob,
            operator,
            alice_key,
            alice_plain,
            bob_key,
            versions,
        )
