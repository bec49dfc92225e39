"""Models, offers and prices for operators.

A price is never edited: each change inserts an immutable price version and points the offer
at it, so every receipt can name exactly the prices it was charged at. Every change is audited
and bumps the config version in the caller's transaction (functions never commit)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, RowMapping

from tallygate.audit import service as audit
from tallygate.catalog import repository as repo
from tallygate.catalog.schemas import (
    ModelCreate,
    ModelOut,
    ModelUpdate,
    OfferOut,
    OfferPut,
    PriceHistory,
    Prices,
    PricesIn,
    PriceVersionOut,
)
from tallygate.errors import BadRequest, Conflict, NotFound
from tallygate.keys.scopes import BUCKET_OF_ROUTE, ROUTE_TYPES
from tallygate.kit import config_version
from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import parse_amount, to_decimal_string
from tallygate.ledger.tx import from_connection

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9._/-]+$")


class InvalidModel(BadRequest):
    code = "invalid_model"


class InvalidPrice(BadRequest):
    code = "invalid_price"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ModelExists(Conflict):
    code = "model_exists"


class PriceNanos(NamedTuple):
    """Nano-units of the bucket's currency per million tokens."""

    input: int
    output: int
    cached_input: int


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes the catalog, as the audit trail and price versions record it."""

    name: str
    """The operator's email (or ``cli``/``system``)."""
    source: str = "operator"
    """Audit source: operator, cli or system."""
    price_source: str = "manual"
    """Price version source: manual, sync or demo."""
    reason: str = ""


# ---- validation -------------------------------------------------------------------------------


def check_model_name(name: str) -> str:
    if (
        not name
        or len(name) > 200
        or not MODEL_NAME_RE.match(name)
        or name.startswith("/")
        or name.endswith("/")
    ):
        raise InvalidModel(
            f"invalid model name {name!r}: use letters, digits and . _ / - (no ':', which is "
            "reserved for the ':official'/':routed' suffix of the API model id)",
            param="name",
        )
    return name


def check_sizes(context_length: int | None, output_cap: int | None) -> None:
    for field, value in (("context_length", context_length), ("output_cap", output_cap)):
        if value is not None and value < 1:
            raise InvalidModel(f"{field} must be at least 1 token", param=field)


def check_route_type(route_type: str) -> str:
    if route_type not in ROUTE_TYPES:
        raise BadRequest(
            f"unknown route type {route_type!r}: expected official or routed", param="route_type"
        )
    return route_type


def parse_prices(
    given: PricesIn, route_type: str, currencies: Mapping[str, str], *, field: str = "prices"
) -> PriceNanos:
    currency = currencies[BUCKET_OF_ROUTE[route_type]]
    if given.currency is not None and given.currency.upper() != currency:
        raise InvalidPrice(
            f"{field}: {route_type} prices are paid from the {BUCKET_OF_ROUTE[route_type]} "
            f"bucket in {currency}, not {given.currency}",
            param=f"{field}.currency",
        )

    def one(text: str, name: str) -> int:
        nanos = parse_amount(text.strip(), field=f"{field}.{name}")
        if nanos < 0:
            raise InvalidPrice(f"{field}.{name} must not be negative", param=f"{field}.{name}")
        return nanos

    input_nanos = one(given.input, "input")
    cached = input_nanos if given.cached_input is None else one(given.cached_input, "cached_input")
    return PriceNanos(input_nanos, one(given.output, "output"), cached)


# ---- views ------------------------------------------------------------------------------------


def prices_view(p: PriceNanos) -> Prices:
    return Prices(
        input_per_m_nanos=p.input,
        input_per_m=to_decimal_string(p.input),
        output_per_m_nanos=p.output,
        output_per_m=to_decimal_string(p.output),
        cached_input_per_m_nanos=p.cached_input,
        cached_input_per_m=to_decimal_string(p.cached_input),
    )


def offer_prices(o: Mapping[Any, Any]) -> PriceNanos | None:
    if o["price_version_id"] is None:
        return None
    return PriceNanos(
        int(o["input_per_m_nanos"]),
        int(o["output_per_m_nanos"]),
        int(o["cached_input_per_m_nanos"]),
    )


def offer_view(name: str, o: Mapping[Any, Any], currencies: Mapping[str, str]) -> OfferOut:
    route_type = str(o["route_type"])
    bucket = BUCKET_OF_ROUTE[route_type]
    prices = offer_prices(o)
    return OfferOut(
        route_type=route_type,  # type: ignore[arg-type]
        api_model_id=f"{name}:{route_type}",
        bucket=bucket,  # type: ignore[arg-type]
        currency=str(o["currency"] or currencies[bucket]),
        enabled=bool(o["enabled"]),
        price_version_id=o["price_version_id"],
        prices=None if prices is None else prices_view(prices),
    )


def model_view(
    m: Mapping[Any, Any], offers: list[RowMapping], currencies: Mapping[str, str]
) -> ModelOut:
    return ModelOut(
        name=str(m["name"]),
        description=str(m["description"]),
        context_length=int(m["context_length"]),
        output_cap=int(m["output_cap"]),
        enabled=bool(m["enabled"]),
        created_at=from_epoch_us(int(m["created_at"])),
        offers=[offer_view(str(m["name"]), o, currencies) for o in offers],
    )


def _model(conn: Connection, name: str) -> RowMapping:
    row = repo.model_by_name(conn, name)
    if row is None:
        raise ModelNotFound(f"no model named {name!r}")
    return row


def get_model(conn: Connection, name: str, currencies: Mapping[str, str]) -> ModelOut:
    m = _model(conn, name)
    return model_view(m, repo.offers(conn, [int(m["id"])]), currencies)


def list_models(conn: Connection, currencies: Mapping[str, str]) -> list[ModelOut]:
    rows = repo.all_models(conn)
    by_model: dict[int, list[RowMapping]] = {}
    for o in repo.offers(conn):
        by_model.setdefault(int(o["model_id"]), []).append(o)
    return [model_view(m, by_model.get(int(m["id"]), []), currencies) for m in rows]


def price_history(conn: Connection, name: str) -> PriceHistory:
    m = _model(conn, name)
    versions = [
        PriceVersionOut(
            id=int(v["id"]),
            route_type=v["route_type"],
            current=bool(v["current"]),
            currency=str(v["currency"]),
            prices=prices_view(
                PriceNanos(
                    int(v["input_per_m_nanos"]),
                    int(v["output_per_m_nanos"]),
                    int(v["cached_input_per_m_nanos"]),
                )
            ),
            source=str(v["source"]),
            created_by=str(v["created_by"]),
            created_at=from_epoch_us(int(v["created_at"])),
        )
        for v in repo.price_history(conn, int(m["id"]))
    ]
    return PriceHistory(model=name, versions=versions)


# ---- changes ----------------------------------------------------------------------------------


def record_change(
    conn: Connection, actor: Actor, now_us: int, action: str, target: str, before: Any, after: Any
) -> None:
    tx = from_connection(conn)
    audit.record(
        tx,
        now_us=now_us,
        actor=actor.name,
        source=actor.source,
        action=action,
        target=target,
        before=before,
        after=after,
        reason=actor.reason,
    )
    config_version.bump(tx, now_us)


def create_model(
    conn: Connection, body: ModelCreate, *, actor: Actor, now_us: int, currencies: Mapping[str, str]
) -> ModelOut:
    name = check_model_name(body.name.strip())
    check_sizes(body.context_length, body.output_cap)
    if repo.model_by_name(conn, name) is not None:
        raise ModelExists(f"a model named {name!r} already exists", param="name")
    fields = {
        "description": body.description,
        "context_length": body.context_length,
        "output_cap": body.output_cap,
        "enabled": body.enabled,
    }
    repo.insert_model(
        conn, name=name, **{**fields, "enabled": int(body.enabled)}, created_at=now_us
    )
    record_change(conn, actor, now_us, "model.create", f"model:{name}", None, fields)
    return get_model(conn, name, currencies)


def update_model(
    conn: Connection,
    name: str,
    body: ModelUpdate,
    *,
    actor: Actor,
    now_us: int,
    currencies: Mapping[str, str],
) -> ModelOut:
    m = _model(conn, name)
    check_sizes(body.context_length, body.output_cap)
    given = {f: getattr(body, f) for f in body.model_fields_set if getattr(body, f) is not None}
    current = {f: (bool(m[f]) if f == "enabled" else m[f]) for f in given}
    changed = {f: v for f, v in given.items() if v != current[f]}
    if changed:
        values = {f: (int(v) if f == "enabled" else v) for f, v in changed.items()}
        repo.update_model(conn, int(m["id"]), values)
        before = {f: current[f] for f in changed}
        record_change(conn, actor, now_us, "model.update", f"model:{name}", before, changed)
    return get_model(conn, name, currencies)


def _offer_state(o: Mapping[Any, Any] | None) -> dict[str, Any] | None:
    if o is None:
        return None
    p = offer_prices(o)
    return {
        "enabled": bool(o["enabled"]),
        "price_version_id": o["price_version_id"],
        "currency": o["currency"],
        "prices": None if p is None else prices_view(p).model_dump(),
    }


def apply_prices(
    conn: Connection,
    model: Mapping[Any, Any],
    route_type: str,
    prices: PriceNanos,
    *,
    enabled: bool | None,
    actor: Actor,
    now_us: int,
    currencies: Mapping[str, str],
) -> bool:
    """Set an offer's prices (a new version only when they differ) and optionally its enabled
    flag; creates the offer on first use. Returns whether anything changed."""
    model_id, name = int(model["id"]), str(model["name"])
    currency = currencies[BUCKET_OF_ROUTE[route_type]]
    existing = {str(o["route_type"]): o for o in repo.offers(conn, [model_id])}.get(route_type)
    offer_id = int(existing["id"]) if existing else repo.insert_offer(conn, model_id, route_type)
    values: dict[str, Any] = {}
    same_price = existing is not None and (
        offer_prices(existing) == prices and existing["currency"] == currency
    )
    if not same_price:
        values["price_version_id"] = repo.insert_price_version(
            conn,
            offer_id=offer_id,
            currency=currency,
            input_per_m_nanos=prices.input,
            output_per_m_nanos=prices.output,
            cached_input_per_m_nanos=prices.cached_input,
            source=actor.price_source,
            created_by=actor.name,
            created_at=now_us,
        )
    if enabled is not None and (existing is None or bool(existing["enabled"]) != enabled):
        values["enabled"] = int(enabled)
    if not values and existing is not None:
        return False
    if values:
        repo.update_offer(conn, offer_id, values)
    after = {str(o["route_type"]): o for o in repo.offers(conn, [model_id])}[route_type]
    target = f"model:{name}:{route_type}"
    record_change(
        conn, actor, now_us, "price.set", target, _offer_state(existing), _offer_state(after)
    )
    return True


def put_offer(
    conn: Connection,
    name: str,
    route_type: str,
    body: OfferPut,
    *,
    actor: Actor,
    now_us: int,
    currencies: Mapping[str, str],
) -> ModelOut:
    m = _model(conn, name)
    check_route_type(route_type)
    prices = parse_prices(body, route_type, currencies)
    apply_prices(
        conn,
        m,
        route_type,
        prices,
        enabled=body.enabled,
        actor=actor,
        now_us=now_us,
        currencies=currencies,
    )
    return get_model(conn, name, currencies)
