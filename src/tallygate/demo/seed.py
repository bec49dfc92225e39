"""``tallygate demo``: make a fresh database ready to use in one step.

Idempotent — running it again keeps what exists: a demo user with a small starter balance in
both buckets, two models (one on the official route, one on the routed route), two channels
that point at the built-in demo upstream served by the same process under ``/demo-upstream``,
and an API key (``TALLYGATE_DEMO_KEY`` when set, otherwise a new one per start). The channels
follow the address this start serves on: started again on another ``--host``/``--port``, they
are moved to it (an audited channel update), and a wildcard bind address (``0.0.0.0``, ``::``)
is reached through loopback."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Connection

from tallygate.catalog import repository as catalog_repo
from tallygate.catalog import service as catalog
from tallygate.catalog.schemas import ModelCreate, OfferPut
from tallygate.channels import repository as channels_repo
from tallygate.channels import service as channels
from tallygate.channels.schemas import (
    ChannelCreate,
    ChannelUpdate,
    MappingsPut,
    ModelMapping,
    RouteType,
)
from tallygate.config import Settings
from tallygate.keys import service as keys
from tallygate.keys.schemas import KeyCreate
from tallygate.kit import config_version
from tallygate.ledger import Ledger
from tallygate.users import repository as users_repo
from tallygate.users import service as users

DEMO_EMAIL = "demo@tallygate.dev"
DEMO_PASSWORD = "demo-password"
UPSTREAM_PATH = "/demo-upstream"
UPSTREAM_SECRET = "sk-demo-upstream"
STARTER = {"credit": 2_000_000_000, "routed": 10_000_000_000}  # $2.00 and ¥10.00 (nano-units)

MODELS: tuple[tuple[str, str, RouteType, str, str, str], ...] = (
    # name, description, route type, input, output, cached input (per million tokens)
    (
        "gpt-4o-mini",
        "Demo model on the official route (paid from Credit).",
        "official",
        "0.15",
        "0.60",
        "0.075",
    ),
    (
        "qwen-turbo",
        "Demo model on a lower-cost routed channel (paid from routed balance).",
        "routed",
        "0.30",
        "0.60",
        "0.30",
    ),
)


def local_url(base_url: str) -> str:
    """The address this machine reaches a server on, given the address it serves on: a wildcard
    bind (``0.0.0.0``, ``::``) is reached through loopback."""
    parts = urlsplit(base_url.rstrip("/"))
    host = parts.hostname or ""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def upstream_url(base_url: str) -> str:
    """Where this process reaches its own demo upstream, given the address it serves on."""
    return f"{local_url(base_url)}{UPSTREAM_PATH}/v1"


@dataclass(frozen=True)
class Demo:
    user_id: int
    email: str
    password: str
    api_key: str


def seed(
    conn: Connection,
    ledger: Ledger,
    settings: Settings,
    *,
    base_url: str,
    now_us: int,
    fixed_key: str | None,
) -> Demo:
    ledger.bootstrap(ledger.tx(conn))
    currencies = ledger.currencies
    actor = catalog.Actor(name="demo", source="system")
    found = users_repo.user_by_email(conn, DEMO_EMAIL)
    if found is None:
        user = users.create_user(
            conn,
            ledger,
            email=DEMO_EMAIL,
            password=DEMO_PASSWORD,
            display_name="Demo user",
            now_us=now_us,
            actor="demo",
            source="system",
        )
        user_id = user.id
    else:
        user_id = int(found["id"])
    tx = ledger.tx(conn)
    for bucket, amount in STARTER.items():
        ledger.credit(
            tx,
            user_id=user_id,
            bucket=bucket,
            amount_nanos=amount,
            kind="grant",
            source="promo:starter",
            idempotency_key=f"demo-starter:{user_id}:{bucket}",
            lot_kind="promo",
            cause_type="starter",
            cause_id=f"demo:{bucket}",
            memo="demo starter credit",
        )
    for name, description, route, pin, pout, pcached in MODELS:
        if catalog_repo.model_by_name(conn, name) is None:
            catalog.create_model(
                conn,
                ModelCreate(
                    name=name, description=description, context_length=128_000, output_cap=4096
                ),
                actor=actor,
                now_us=now_us,
                currencies=currencies,
            )
            catalog.put_offer(
                conn,
                name,
                route,
                OfferPut(input=pin, output=pout, cached_input=pcached),
                actor=actor,
                now_us=now_us,
                currencies=currencies,
            )
        channel_name = f"demo-{route}"
        url = channels.check_base_url(upstream_url(base_url))
        existing = channels_repo.channel_id_by_name(conn, channel_name)
        if existing is not None and channels.get_channel(conn, existing).base_url != url:
            channels.update_channel(
                conn,
                existing,
                ChannelUpdate(base_url=url),
                operator="demo",
                secret_key=settings.secret_key,
                now_us=now_us,
            )
        if existing is None:
            channel = channels.create_channel(
                conn,
                ChannelCreate(
                    name=channel_name,
                    label=f"Demo {route} channel",
                    base_url=url,
                    secret=UPSTREAM_SECRET,
                    route_type=route,
                ),
                operator="demo",
                secret_key=settings.secret_key,
                now_us=now_us,
            )
            channels.put_mappings(
                conn,
                channel.id,
                MappingsPut(models=[ModelMapping(model=name, upstream_model=name)]),
                operator="demo",
                now_us=now_us,
            )
    api_key = _ensure_key(conn, ledger, user_id, fixed_key, now_us)
    config_version.bump(ledger.tx(conn), now_us)
    return Demo(user_id, DEMO_EMAIL, DEMO_PASSWORD, api_key)


def _ensure_key(
    conn: Connection, ledger: Ledger, user_id: int, fixed_key: str | None, now_us: int
) -> str:
    body = KeyCreate(label="demo", project="demo", default_route_type="official")
    currencies = ledger.currencies
    if not fixed_key:
        return keys.create_key(
            conn, user_id=user_id, body=body, currencies=currencies, now_us=now_us
        ).key
    tx = ledger.tx(conn)
    digest = hashlib.sha256(fixed_key.encode()).hexdigest()
    if (
        tx.one("SELECT 1 FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (digest,))
        is None
    ):
        # Create a key the ordinary way, then make it answer to the operator-chosen value.
        created = keys.create_key(
            conn, user_id=user_id, body=body, currencies=currencies, now_us=now_us
        )
        tx.run(
            "UPDATE api_keys SET key_hash = ?, prefix = ? WHERE id = ?",
            (digest, fixed_key[:10], created.id),
        )
    return fixed_key
