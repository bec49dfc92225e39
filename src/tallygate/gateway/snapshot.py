"""The gateway's in-memory view of its configuration: keys, models with their current prices,
channels with their (decrypted) secrets, and the charge policy.

Loaded in one read transaction and swapped atomically when the configuration version moves
(checked about once a second), so the hot path never queries configuration. What must be exact
across processes — revocation, expiry, spend limits — is enforced again inside the hold."""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field

import orjson

from tallygate.billing import charge_policy
from tallygate.billing.pricing import Price
from tallygate.kit import config_version, crypto
from tallygate.ledger.tx import Tx

logger = logging.getLogger(__name__)

ROUTE_BUCKET = {"official": "credit", "routed": "routed"}


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    user_id: int
    prefix: str
    label: str
    project: str
    allowed_models: tuple[str, ...]
    allowed_route_types: frozenset[str]
    default_route_type: str
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: int | None
    revoked_at: int | None

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or any(
            fnmatch.fnmatchcase(model, pattern) for pattern in self.allowed_models
        )


@dataclass(frozen=True, slots=True)
class Offer:
    route_type: str
    bucket: str
    price: Price


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    description: str
    context_length: int
    output_cap: int
    created_at: int
    offers: dict[str, Offer]


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    name: str
    label: str
    kind: str
    base_url: str
    secret: str
    route_type: str
    priority: int
    weight: int
    timeout_seconds: int
    models: dict[str, str]  # public model → upstream model id


@dataclass(frozen=True)
class Snapshot:
    version: int
    keys: dict[str, KeyInfo]  # by sha256 hex of the key
    models: dict[str, ModelInfo]
    channels: tuple[Channel, ...]
    policy: charge_policy.ChargePolicy
    by_route: dict[tuple[str, str], tuple[Channel, ...]] = field(default_factory=dict)

    def channels_for(self, model: str, route_type: str) -> tuple[Channel, ...]:
        return self.by_route.get((model, route_type), ())


def load(tx: Tx, secret_key: str) -> Snapshot:
    version = config_version.read(tx)
    keys = {}
    for row in tx.all(
        "SELECT id, user_id, prefix, label, project, allowed_models, allowed_route_types, "
        "default_route_type, rpm_limit, tpm_limit, expires_at, revoked_at, key_hash "
        "FROM api_keys WHERE revoked_at IS NULL"
    ):
        keys[str(row[12])] = KeyInfo(
            int(row[0]),
            int(row[1]),
            str(row[2]),
            str(row[3]),
            str(row[4]),
            tuple(orjson.loads(row[5] or "[]")),
            frozenset(orjson.loads(row[6] or "[]")),
            str(row[7]),
            row[8],
            row[9],
            row[10],
            row[11],
        )
    offers: dict[int, dict[str, Offer]] = {}
    for model_id, route_type, pv_id, currency, pin, pout, pcached in tx.all(
        "SELECT o.model_id, o.route_type, p.id, p.currency, p.input_per_m_nanos, "
        "p.output_per_m_nanos, p.cached_input_per_m_nanos FROM model_offers o "
        "JOIN price_versions p ON p.id = o.price_version_id WHERE o.enabled = 1"
    ):
        offers.setdefault(int(model_id), {})[str(route_type)] = Offer(
            str(route_type),
            ROUTE_BUCKET[str(route_type)],
            Price(int(pv_id), str(currency), int(pin), int(pout), int(pcached)),
        )
    models = {
        str(name): ModelInfo(
            str(name), str(desc), int(ctx), int(cap), int(created), offers.get(int(mid), {})
        )
        for mid, name, desc, ctx, cap, created in tx.all(
            "SELECT id, name, description, context_length, output_cap, created_at FROM models "
            "WHERE enabled = 1"
        )
    }
    mappings: dict[int, dict[str, str]] = {}
    for channel_id, model_name, upstream in tx.all(
        "SELECT channel_id, model_name, upstream_model FROM channel_models"
    ):
        mappings.setdefault(int(channel_id), {})[str(model_name)] = str(upstream)
    channels = []
    for row in tx.all(
        "SELECT id, name, label, kind, base_url, secret_ciphertext, route_type, priority, weight, "
        "timeout_seconds FROM channels WHERE enabled = 1 ORDER BY id"
    ):
        try:
            secret = crypto.decrypt(secret_key, str(row[5] or ""))
        except ValueError:
            logger.error(
                "channel %s: its secret cannot be decrypted with this server's "
                "secret key; the channel is skipped",
                row[1],
            )
            continue
        channels.append(
            Channel(
                int(row[0]),
                str(row[1]),
                str(row[2]),
                str(row[3]),
                str(row[4]).rstrip("/"),
                secret,
                str(row[6]),
                int(row[7]),
                int(row[8]),
                int(row[9]),
                mappings.get(int(row[0]), {}),
            )
        )
    policy_row = tx.one(
        "SELECT value_json FROM settings_kv WHERE key = ?", (charge_policy.SETTINGS_KEY,)
    )
    policy = (
        charge_policy.parse(orjson.loads(policy_row[0]))
        if policy_row
        else charge_policy.ChargePolicy()
    )
    by_route: dict[tuple[str, str], list[Channel]] = {}
    for channel in channels:
        for model in channel.models:
            by_route.setdefault((model, channel.route_type), []).append(channel)
    return Snapshot(
        version, keys, models, tuple(channels), policy, {k: tuple(v) for k, v in by_route.items()}
    )


def current_version(tx: Tx) -> int:
    return config_version.read(tx)
