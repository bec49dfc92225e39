"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL (``backend``)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tallygate.db.engine import Database
from tallygate.kit.clock import FrozenClock
from tallygate.ledger import Ledger
from tallygate.ledger.tx import from_connection
from tests.fixtures import databases

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

CURRENCIES = {"credit": "USD", "routed": "CNY"}


# ---- no connection leaves the machine ---------------------------------------------------------

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> object:
    if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = str(address[0])
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise AssertionError(f"test tried to connect outside 127.0.0.1: {address!r}")
    return _real_connect(self, address)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


# ---- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _pg_url() -> Iterator[str]:
    databases.ensure_postgres()
    url = databases.create_pg_database("tg_test")
    databases.migrated(url)
    yield url
    databases.drop_pg_database(url)


@pytest.fixture(scope="session")
def _sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "tallygate.db"
    return databases.migrated(f"sqlite:///{path}")


@pytest.fixture(scope="session")
def _databases(request: pytest.FixtureRequest) -> Iterator[dict[str, Database]]:
    opened: dict[str, Database] = {}
    yield opened
    for db in opened.values():
        db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(backend: str, request: pytest.FixtureRequest, _databases: dict[str, Database]) -> Database:
    """A migrated, empty database of the parametrised backend."""
    if backend not in _databases:
        url = request.getfixturevalue("_pg_url" if backend == "postgresql" else "_sqlite_url")
        _databases[backend] = Database(url)
    database = _databases[backend]
    databases.empty(database)
    return database


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def ledger(db: Database, clock: FrozenClock) -> Ledger:
    led = Ledger(CURRENCIES, clock=clock, hold_ttl_seconds=600, hold_grace_seconds=60)
    with db.begin() as conn:
        led.bootstrap(from_connection(conn))
    return led


class TxRunner:
    """Run one ledger call in its own committed transaction (as a request boundary would)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __call__(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        with self.db.begin() as conn:
            return fn(from_connection(conn), *args, **kwargs)


@pytest.fixture
def run(db: Database) -> TxRunner:
    return TxRunner(db)
