"""The user's marketplace: enabled models with prices per route type, the route health summary
(no channel names) and which of the caller's keys may use each offer."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from pydantic import BaseModel
from sqlalchemy import Connection, RowMapping

from tallygate.catalog import repository as repo
from tallygate.catalog.schemas import OfferOut
from tallygate.catalog.service import offer_view
from tallygate.keys import repository as keys_repo
from tallygate.keys.scopes import admits

HEALTH_WINDOW_SECONDS = 15 * 60


class RouteHealth(BaseModel):
    """Requests that reached a route in the last 15 minutes (refusals before any upstream call
    are not counted; a stream the client cut short counts as served)."""

    window_seconds: int
    requests: int
    succeeded: int
    success_rate: float | None
    """succeeded / requests, 4 decimals; null without requests."""
    median_latency_ms: int | None
    """Median total latency of the successful requests, in milliseconds."""


class KeyRef(BaseModel):
    id: int
    prefix: str
    label: str


class MarketOffer(OfferOut):
    health: RouteHealth
    usable_by_keys: list[KeyRef]
    """The caller's live keys (not revoked, not expired) whose model patterns and route types
    admit this model on this route type."""


class MarketModel(BaseModel):
    name: str
    description: str
    context_length: int
    output_cap: int
    offers: list[MarketOffer]


class Marketplace(BaseModel):
    models: list[MarketModel]


def _median_ms(conn: Connection, model: str, route_type: str, since_us: int, n: int) -> int | None:
    if n == 0:
        return None

    def at(offset: int) -> int:
        found = repo.success_latency_at(
            conn, model=model, route_type=route_type, since_us=since_us, offset=offset
        )
        return found or 0

    mid = at(n // 2)
    median_us = mid if n % 2 else (at(n // 2 - 1) + mid) / 2
    return int(median_us / 1000 + 0.5)


def health(conn: Connection, now_us: int) -> dict[tuple[str, str], RouteHealth]:
    since = now_us - HEALTH_WINDOW_SECONDS * 1_000_000
    result = {}
    for row in repo.health_counts(conn, since):
        model, route_type = str(row["model"]), str(row["route_type"])
        requests, succeeded = int(row["requests"]), int(row["succeeded"] or 0)
        result[(model, route_type)] = RouteHealth(
            window_seconds=HEALTH_WINDOW_SECONDS,
            requests=requests,
            succeeded=succeeded,
            success_rate=round(succeeded / requests, 4) if requests else None,
            median_latency_ms=_median_ms(conn, model, route_type, since, succeeded),
        )
    return result


def _no_traffic() -> RouteHealth:
    return RouteHealth(
        window_seconds=HEALTH_WINDOW_SECONDS,
        requests=0,
        succeeded=0,
        success_rate=None,
        median_latency_ms=None,
    )


def _usable(keys: list[RowMapping], model: str, route_type: str) -> list[KeyRef]:
    return [
        KeyRef(id=int(k["id"]), prefix=str(k["prefix"]), label=str(k["label"]))
        for k in keys
        if admits(
            orjson.loads(k["allowed_models"]),
            orjson.loads(k["allowed_route_types"]),
            model,
            route_type,
        )
    ]


def marketplace(
    conn: Connection, *, user_id: int, now_us: int, currencies: Mapping[str, str]
) -> Marketplace:
    """Enabled models; per model, its enabled and priced offers."""
    models = repo.all_models(conn, enabled_only=True)
    offers: dict[int, list[RowMapping]] = {}
    for o in repo.offers(conn, [int(m["id"]) for m in models]):
        if o["enabled"] and o["price_version_id"] is not None:
            offers.setdefault(int(o["model_id"]), []).append(o)
    keys = keys_repo.live_keys_of(conn, user_id, now_us)
    stats = health(conn, now_us)
    result = []
    for m in models:
        name = str(m["name"])
        market_offers = []
        for o in offers.get(int(m["id"]), []):
            route_type = str(o["route_type"])
            market_offers.append(
                MarketOffer(
                    **offer_view(name, o, currencies).model_dump(),
                    health=stats.get((name, route_type)) or _no_traffic(),
                    usable_by_keys=_usable(keys, name, route_type),
                )
            )
        if not market_offers:
            continue
        result.append(
            MarketModel(
                name=name,
                description=str(m["description"]),
                context_length=int(m["context_length"]),
                output_cap=int(m["output_cap"]),
                offers=market_offers,
            )
        )
    return Marketplace(models=result)
