"""Helpers for the multi-process gateway tests: real ``tallygate serve`` processes on one
throw-away PostgreSQL database, arranged through the real services, read back with SQL.

Nothing here asks the gateway under test how much anything costs: prices are fixed here in
nano-units and every expected charge is computed with :func:`expected_charge`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from tallygate.catalog import service as catalog
from tallygate.catalog.schemas import ModelCreate, OfferPut
from tallygate.channels import service as channels
from tallygate.channels.schemas import ChannelCreate, MappingsPut, ModelMapping
from tallygate.db.engine import Database
from tallygate.keys import service as keys
from tallygate.keys.schemas import KeyCreate, SpendLimitIn
from tallygate.kit.clock import SystemClock, to_epoch_us
from tallygate.ledger import Ledger
from tallygate.users import service as users
from tests.fixtures import databases
from tests.fixtures.upstream_server import UpstreamServer

CURRENCIES = {"credit": "USD", "routed": "CNY"}
SECRET_KEY = "multiprocess-test-secret-key-0123456789"
PASSWORD = "correct horse battery"
PER_M = 1_000_000
STARTUP_TIMEOUT = 30.0

# The routed models (paid from the routed bucket, CNY), in nano-units per million tokens.
# ``mp-out``: the whole price on output tokens, so a hold (padded prompt estimate × 0 +
# max_tokens × output) equals the charge of an answer of exactly max_tokens tokens.
# ``mp-mixed``: prompt and output both priced, with an odd output price so the single
# round-up on the total matters.
OUT_ONLY = "mp-out"
OUT_ONLY_PRICES = (0, 600_001_500)  # input ¥0, output ¥0.6000015 per million
MIXED = "mp-mixed"
MIXED_PRICES = (150_000_700, 600_001_500)  # input ¥0.1500007, output ¥0.6000015 per million


def _decimal(nanos: int) -> str:
    units, frac = divmod(nanos, 1_000_000_000)
    return f"{units}.{frac:09d}"


def expected_charge(prices: tuple[int, int], prompt_tokens: int, completion_tokens: int) -> int:
    """ceil((prompt × input + completion × output) / 10^6), computed here, independently."""
    exact = prompt_tokens * prices[0] + completion_tokens * prices[1]
    return -(-exact // PER_M)


def now_us() -> int:
    return to_epoch_us(SystemClock().now())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- the gateway processes -----------------------------------------------------------------


@dataclass
class Gateway:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def client(self, api_key: str, **kwargs: Any) -> openai.AsyncOpenAI:
        """An async ``openai`` client on this process: no retries, bounded timeout."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20.0)
        return openai.AsyncOpenAI(base_url=self.v1, api_key=api_key, **kwargs)

    def http(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 20.0)
        return httpx.Client(base_url=self.url, **kwargs)


def gateway_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env.update(
        TALLYGATE_DATABASE_URL=database_url,
        TALLYGATE_LOG_LEVEL="WARNING",
        # Long on purpose: revocation and spend limits must hold WITHOUT a snapshot refresh.
        TALLYGATE_CONFIG_REFRESH_SECONDS="60",
        TALLYGATE_SECRET_KEY=SECRET_KEY,
        TALLYGATE_CREDIT_CURRENCY=CURRENCIES["credit"],
        TALLYGATE_ROUTED_CURRENCY=CURRENCIES["routed"],
    )
    env.update(extra or {})
    return env


def spawn_gateway(
    name: str, database_url: str, log_dir: Path, extra_env: dict[str, str] | None = None
) -> Gateway:
    port = free_port()
    log_path = log_dir / f"gateway-{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tallygate",
                "serve",
                "--no-migrate",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=gateway_env(database_url, extra_env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Gateway(name, proc, port, log_path)


def wait_healthy(gateways: Sequence[Gateway], timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    pending = list(gateways)
    with httpx.Client(timeout=2.0) as client:
        while pending:
            gw = pending[0]
            if gw.proc.poll() is not None:
                raise AssertionError(
                    f"gateway {gw.name} exited with {gw.proc.returncode}:\n{gw.log_tail()}"
                )
            try:
                if client.get(f"{gw.url}/healthz").status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"gateway {gw.name} did not answer /healthz within {timeout} s:\n"
                    f"{gw.log_tail()}"
                )
            time.sleep(0.1)


def stop_gateway(gw: Gateway) -> None:
    if gw.proc.poll() is None:
        gw.proc.terminate()
        try:
            gw.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait(timeout=10)


def reconcile(database_url: str) -> subprocess.CompletedProcess[str]:
    """``tallygate reconcile`` against the database, as an operator would run it."""
    return subprocess.run(
        [sys.executable, "-m", "tallygate", "reconcile"],
        env=gateway_env(database_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_reconciled(database_url: str) -> None:
    done = reconcile(database_url)
    assert done.returncode == 0, f"reconcile failed:\n{done.stdout}\n{done.stderr}"


# ---- the cluster: database, upstream, catalog, two processes -----------------------------------


@dataclass
class Cluster:
    url: str
    db: Database
    ledger: Ledger
    upstream: UpstreamServer
    a: Gateway
    b: Gateway
    channel_id: int = 0
    started_at: float = 0.0
    """``time.monotonic()`` before the processes were spawned: their first periodic snapshot
    refresh comes at least 60 s later."""
    _seq: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    @property
    def gateways(self) -> tuple[Gateway, Gateway]:
        return (self.a, self.b)

    def logs(self) -> str:
        return "\n".join(f"--- {g.name} ---\n{g.log_tail()}" for g in self.gateways)

    # arranging, through the real services, committed

    def user(self) -> users.User:
        with self.db.begin() as conn:
            return users.create_user(
                conn,
                self.ledger,
                email=f"mp{next(self._seq)}@example.com",
                password=PASSWORD,
                now_us=now_us(),
            )

    def topup(self, user_id: int, amount_nanos: int, bucket: str = "routed") -> None:
        with self.db.begin() as conn:
            self.ledger.credit(
                self.ledger.tx(conn),
                user_id=user_id,
                bucket=bucket,
                amount_nanos=amount_nanos,
                kind="topup",
                source="clearing:sandbox",
                idempotency_key=f"mp-topup:{next(self._seq)}",
                cause_type="order",
                memo="sandbox top-up",
            )

    def key(
        self, user_id: int, *, routed_total_limit: int | None = None, **fields: Any
    ) -> tuple[int, str]:
        """A new key (routed by default); its id and the full key, shown once. Other
        ``KeyCreate`` fields (``rpm_limit``, ``tpm_limit`` …) pass through."""
        limits = {}
        if routed_total_limit is not None:
            limits["routed"] = SpendLimitIn(total=_decimal(routed_total_limit))
        body = KeyCreate(
            label=f"mp-key-{next(self._seq)}",
            project="multiprocess",
            default_route_type="routed",
            spend_limits=limits,  # type: ignore[arg-type]
            **fields,
        )
        with self.db.begin() as conn:
            created = keys.create_key(
                conn, user_id=user_id, body=body, currencies=self.ledger.currencies, now_us=now_us()
            )
        return created.id, created.key

    # reading back

    def balance(self, user_id: int, bucket: str = "routed") -> tuple[int, int]:
        """(balance, held) of the user's bucket, in nano-units."""
        with self.db.read() as conn:
            b = self.ledger.balance(self.ledger.tx(conn), user_id, bucket)
        return b.balance_nanos, b.held_nanos

    def receipts(self, *, key_id: int) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT * FROM receipts WHERE key_id = %(k)s ORDER BY id", {"k": key_id}
            )
            return [dict(r._mapping) for r in rows]

    def receipt(self, request_id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.exec_driver_sql(
                "SELECT * FROM receipts WHERE request_id = %(r)s", {"r": request_id}
            ).first()
        return dict(row._mapping) if row is not None else None

    def wait_receipt(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.receipt(request_id)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no receipt for {request_id} within {timeout} s")
            time.sleep(0.02)

    def usage_debit(self, entry_id: int, user_id: int, bucket: str = "routed") -> int:
        """What the ledger entry took from the user's bucket (a positive number)."""
        with self.db.read() as conn:
            row = conn.exec_driver_sql(
                "SELECT COALESCE(SUM(p.amount_nanos * a.normal), 0) FROM postings p "
                "JOIN accounts a ON a.id = p.account_id "
                "WHERE p.entry_id = %(e)s AND a.user_id = %(u)s AND a.bucket = %(b)s "
                "AND a.kind = 'bucket'",
                {"e": entry_id, "u": user_id, "b": bucket},
            ).one()
        return -int(row[0])

    def key_spend(self, key_id: int, bucket: str = "routed") -> dict[str, Any]:
        with self.db.read() as conn:
            row = conn.exec_driver_sql(
                "SELECT * FROM key_spend WHERE key_id = %(k)s AND bucket = %(b)s",
                {"k": key_id, "b": bucket},
            ).one()
        return dict(row._mapping)


def seed_catalog(db: Database, ledger: Ledger, upstream: UpstreamServer) -> int:
    """Two routed models on one channel to the test upstream; the channel's id."""
    stamp = now_us()
    actor = catalog.Actor(name="multiprocess-test", source="system")
    with db.begin() as conn:
        ledger.bootstrap(ledger.tx(conn))
        for name, (pin, pout) in ((OUT_ONLY, OUT_ONLY_PRICES), (MIXED, MIXED_PRICES)):
            catalog.create_model(
                conn,
                ModelCreate(name=name, context_length=128_000, output_cap=4096),
                actor=actor,
                now_us=stamp,
                currencies=ledger.currencies,
            )
            catalog.put_offer(
                conn,
                name,
                "routed",
                OfferPut(input=_decimal(pin), output=_decimal(pout), cached_input=_decimal(pin)),
                actor=actor,
                now_us=stamp,
                currencies=ledger.currencies,
            )
        channel = channels.create_channel(
            conn,
            ChannelCreate(
                name="mp-upstream",
                label="Multiprocess test channel",
                base_url=upstream.base_url,
                secret=upstream.api_key or "",
                route_type="routed",
                timeout_seconds=20,
            ),
            operator="multiprocess-test",
            secret_key=SECRET_KEY,
            now_us=stamp,
        )
        channels.put_mappings(
            conn,
            channel.id,
            MappingsPut(
                models=[
                    ModelMapping(model=OUT_ONLY, upstream_model=f"{OUT_ONLY}-upstream"),
                    ModelMapping(model=MIXED, upstream_model=f"{MIXED}-upstream"),
                ]
            ),
            operator="multiprocess-test",
            now_us=stamp,
        )
    return channel.id


@contextmanager
def cluster(log_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A fresh PostgreSQL database, the test upstream and two gateway processes on them
    (``extra_env``: more ``TALLYGATE_*`` settings for both processes)."""
    databases.ensure_postgres()
    with ExitStack() as stack:
        url = databases.create_pg_database("tg_mp")
        stack.callback(databases.drop_pg_database, url)
        databases.migrated(url)
        db = Database(url)
        stack.callback(db.dispose)
        ledger = Ledger(CURRENCIES)
        upstream = stack.enter_context(UpstreamServer())
        channel_id = seed_catalog(db, ledger, upstream)
        spawned = time.monotonic()
        a = spawn_gateway("A", url, log_dir, extra_env)
        stack.callback(stop_gateway, a)
        b = spawn_gateway("B", url, log_dir, extra_env)
        stack.callback(stop_gateway, b)
        wait_healthy([a, b])
        yield Cluster(url, db, ledger, upstream, a, b, channel_id, spawned)
