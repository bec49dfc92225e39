"""Catalog sync: compare a price list with the catalog, show the diff, apply it when approved.

The price list is JSON or YAML::

    models:
      - name: gpt-4o-mini
        description: Small, fast GPT-4o          # optional for existing models
        context_length: 128000                   # required for new models
        output_cap: 16384                        # required for new models
        offers:
          official: {input: "0.15", output: "0.60", cached_input: "0.075"}
          routed:   {input: "1.00", output: "4.00"}

Prices are per million tokens in the paying bucket's currency, written as decimal strings (a
YAML or JSON-text number is read exactly as written; an already-parsed JSON float is refused,
since its digits may not be the ones the operator wrote). The sync adds models, changes fields
and prices; it never deletes or disables anything — what the list lacks is reported as "not in
the price list". ``diff_id`` hashes the list and the catalog state it was compared with, so an
apply after anything changed is refused (409) rather than applying a diff nobody saw."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Connection

from tallygate.catalog import repository as repo
from tallygate.catalog import service
from tallygate.catalog.schemas import (
    FieldChange,
    ModelAdded,
    ModelChanged,
    NotInPriceList,
    PriceChange,
    PricesIn,
    SyncDiff,
    SyncResult,
)
from tallygate.catalog.service import Actor, PriceNanos
from tallygate.errors import BadRequest, Conflict
from tallygate.keys.scopes import ROUTE_TYPES

FIELDS = ("description", "context_length", "output_cap")


class InvalidPriceList(BadRequest):
    code = "invalid_price_list"


class StaleDiff(Conflict):
    code = "stale_diff"


class _Offer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: Any
    output: Any
    cached_input: Any = None
    currency: str | None = None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    context_length: int | None = None
    output_cap: int | None = None
    offers: dict[str, _Offer] = {}


class _PriceList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[_Model]


@dataclass
class Desired:
    description: str | None
    context_length: int | None
    output_cap: int | None
    offers: dict[str, PriceNanos] = field(default_factory=dict)


# ---- reading the price list -------------------------------------------------------------------


class _ExactLoader(yaml.SafeLoader):
    """YAML numbers with a fraction become ``Decimal`` of their exact text, never floats."""


def _exact_float(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    assert isinstance(node, yaml.ScalarNode)
    return Decimal(str(loader.construct_scalar(node)).replace("_", ""))


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _exact_float)


def load_text(text: str) -> Any:
    """A JSON or YAML document; JSON is tried first (numbers read as exact decimals)."""
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        pass
    try:
        return yaml.load(text, Loader=_ExactLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InvalidPriceList(f"the price list is neither valid JSON nor YAML: {exc}") from None


def _price_text(value: Any, where: str) -> str:
    if isinstance(value, bool) or value is None:
        raise InvalidPriceList(f'{where} must be a decimal string such as "0.15"')
    if isinstance(value, float):
        raise InvalidPriceList(
            f'{where} is a JSON number; write prices as decimal strings ("0.15") so that '
            "they are read exactly as written"
        )
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, str):
        return value
    raise InvalidPriceList(f'{where} must be a decimal string such as "0.15"')


def parse_price_list(raw: Any, currencies: Mapping[str, str]) -> dict[str, Desired]:
    try:
        doc = _PriceList.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidPriceList(f"invalid price list: {problems}") from None
    desired: dict[str, Desired] = {}
    for i, m in enumerate(doc.models):
        name = service.check_model_name(m.name.strip())
        if name in desired:
            raise InvalidPriceList(f"model {name!r} is listed twice in the price list")
        service.check_sizes(m.context_length, m.output_cap)
        entry = Desired(m.description, m.context_length, m.output_cap)
        for route_type, offer in m.offers.items():
            where = f"models[{i}] ({name}).offers.{route_type}"
            if route_type not in ROUTE_TYPES:
                raise InvalidPriceList(f"{where}: unknown route type (official or routed)")
            given = PricesIn(
                input=_price_text(offer.input, f"{where}.input"),
                output=_price_text(offer.output, f"{where}.output"),
                cached_input=None
                if offer.cached_input is None
                else _price_text(offer.cached_input, f"{where}.cached_input"),
                currency=offer.currency,
            )
            entry.offers[route_type] = service.parse_prices(
                given, route_type, currencies, field=where
            )
        desired[name] = entry
    return desired


# ---- the diff ---------------------------------------------------------------------------------


def snapshot(conn: Connection) -> dict[str, dict[str, Any]]:
    """Everything the sync compares or changes, per model: fields and current offers."""
    models = repo.all_models(conn)
    by_id: dict[int, dict[str, Any]] = {
        int(m["id"]): {
            "id": int(m["id"]),
            "name": str(m["name"]),
            "description": str(m["description"]),
            "context_length": int(m["context_length"]),
            "output_cap": int(m["output_cap"]),
            "offers": {},
        }
        for m in models
    }
    for o in repo.offers(conn):
        prices = service.offer_prices(o)
        by_id[int(o["model_id"])]["offers"][str(o["route_type"])] = {
            "price_version_id": o["price_version_id"],
            "currency": o["currency"],
            "prices": None if prices is None else list(prices),
        }
    return {m["name"]: m for m in by_id.values()}


def diff_id(desired: dict[str, Desired], current: dict[str, dict[str, Any]]) -> str:
    canonical = {
        "price_list": {
            name: {
                "description": d.description,
                "context_length": d.context_length,
                "output_cap": d.output_cap,
                "offers": {rt: list(p) for rt, p in d.offers.items()},
            }
            for name, d in desired.items()
        },
        "catalog": current,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _price_changes(desired: Desired, offers: Mapping[str, Any]) -> list[PriceChange]:
    changes = []
    for route_type in ROUTE_TYPES:
        new = desired.offers.get(route_type)
        if new is None:
            continue
        old_raw = offers.get(route_type, {}).get("prices")
        old = PriceNanos(*old_raw) if old_raw is not None else None
        if old != new:
            changes.append(
                PriceChange(
                    route_type=route_type,  # type: ignore[arg-type]
                    old=None if old is None else service.prices_view(old),
                    new=service.prices_view(new),
                )
            )
    return changes


def compute(desired: dict[str, Desired], current: dict[str, dict[str, Any]]) -> SyncDiff:
    added, changed, unchanged, missing = [], [], [], []
    for name, d in desired.items():
        have = current.get(name)
        if have is None:
            if d.context_length is None or d.output_cap is None:
                raise InvalidPriceList(
                    f"model {name!r} is new: the price list must give its context_length and "
                    "output_cap"
                )
            added.append(
                ModelAdded(
                    name=name,
                    description=d.description or "",
                    context_length=d.context_length,
                    output_cap=d.output_cap,
                    prices=_price_changes(d, {}),
                )
            )
            continue
        fields = {
            f: FieldChange(old=have[f], new=getattr(d, f))
            for f in FIELDS
            if getattr(d, f) is not None and getattr(d, f) != have[f]
        }
        prices = _price_changes(d, have["offers"])
        if fields or prices:
            changed.append(ModelChanged(name=name, fields=fields, prices=prices))
        else:
            unchanged.append(name)
        absent = [rt for rt in ROUTE_TYPES if rt in have["offers"] and rt not in d.offers]
        if absent:
            missing.append(NotInPriceList(name=name, route_types=absent, whole_model=False))  # type: ignore[arg-type]
    for name, have in current.items():
        if name not in desired:
            route_types = [rt for rt in ROUTE_TYPES if rt in have["offers"]]
            missing.append(NotInPriceList(name=name, route_types=route_types, whole_model=True))  # type: ignore[arg-type]
    return SyncDiff(
        diff_id=diff_id(desired, current),
        added=added,
        changed=changed,
        unchanged=unchanged,
        not_in_price_list=sorted(missing, key=lambda n: n.name),
    )


# ---- preview and apply ------------------------------------------------------------------------


def preview(conn: Connection, raw: Any, currencies: Mapping[str, str]) -> SyncDiff:
    return compute(parse_price_list(raw, currencies), snapshot(conn))


def apply(
    conn: Connection,
    raw: Any,
    approved_diff_id: str,
    *,
    operator: str,
    now_us: int,
    currencies: Mapping[str, str],
) -> SyncResult:
    """Apply the diff the operator approved, in the caller's transaction — or nothing (409)
    when the price list or the catalog changed since the preview."""
    desired = parse_price_list(raw, currencies)
    diff = compute(desired, snapshot(conn))
    if diff.diff_id != approved_diff_id:
        raise StaleDiff(
            "the catalog or the price list changed since this diff was previewed: preview "
            "again and approve the new diff",
            details={"diff_id": diff.diff_id},
        )
    actor = Actor(operator, "operator", "sync", reason=f"catalog sync {diff.diff_id}")
    events = 0
    for a in diff.added:
        fields = {f: getattr(a, f) for f in FIELDS}
        repo.insert_model(conn, name=a.name, **fields, enabled=1, created_at=now_us)
        service.record_change(conn, actor, now_us, "model.create", f"model:{a.name}", None, fields)
        events += 1
    for c in diff.changed:
        if c.fields:
            model = repo.model_by_name(conn, c.name)
            assert model is not None
            repo.update_model(conn, int(model["id"]), {f: ch.new for f, ch in c.fields.items()})
            before = {f: ch.old for f, ch in c.fields.items()}
            after = {f: ch.new for f, ch in c.fields.items()}
            service.record_change(
                conn, actor, now_us, "model.update", f"model:{c.name}", before, after
            )
            events += 1
    for name, prices in [(a.name, a.prices) for a in diff.added] + [
        (c.name, c.prices) for c in diff.changed
    ]:
        model = repo.model_by_name(conn, name)
        assert model is not None
        for change in prices:
            events += service.apply_prices(
                conn,
                model,
                change.route_type,
                desired[name].offers[change.route_type],
                enabled=None,
                actor=actor,
                now_us=now_us,
                currencies=currencies,
            )
    return SyncResult(applied=diff, audit_events=events)
