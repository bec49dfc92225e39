"""Every SQL statement for models, offers, price versions and the route health summary."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, and_, case, func, insert, not_, select, update

from tallygate.models.catalog import model_offers, models, price_versions
from tallygate.models.receipts import receipts

_MODEL_COLUMNS = (
    models.c.id,
    models.c.name,
    models.c.description,
    models.c.context_length,
    models.c.output_cap,
    models.c.enabled,
    models.c.created_at,
)


def model_by_name(conn: Connection, name: str) -> RowMapping | None:
    return conn.execute(select(*_MODEL_COLUMNS).where(models.c.name == name)).mappings().first()


def all_models(conn: Connection, *, enabled_only: bool = False) -> list[RowMapping]:
    stmt = select(*_MODEL_COLUMNS).order_by(models.c.name)
    if enabled_only:
        stmt = stmt.where(models.c.enabled == 1)
    return list(conn.execute(stmt).mappings())


def insert_model(conn: Connection, **values: Any) -> int:
    return int(conn.execute(insert(models).values(**values).returning(models.c.id)).scalar_one())


def update_model(conn: Connection, model_id: int, values: dict[str, Any]) -> None:
    if values:
        conn.execute(update(models).where(models.c.id == model_id).values(**values))


def offers(conn: Connection, model_ids: list[int] | None = None) -> list[RowMapping]:
    """Offers with their current price version (prices NULL when none was ever set)."""
    stmt = (
        select(
            model_offers.c.id,
            model_offers.c.model_id,
            model_offers.c.route_type,
            model_offers.c.enabled,
            model_offers.c.price_version_id,
            price_versions.c.currency,
            price_versions.c.input_per_m_nanos,
            price_versions.c.output_per_m_nanos,
            price_versions.c.cached_input_per_m_nanos,
        )
        .select_from(
            model_offers.outerjoin(
                price_versions, price_versions.c.id == model_offers.c.price_version_id
            )
        )
        .order_by(model_offers.c.model_id, model_offers.c.route_type)
    )
    if model_ids is not None:
        stmt = stmt.where(model_offers.c.model_id.in_(model_ids))
    return list(conn.execute(stmt).mappings())


def offer_id(conn: Connection, model_id: int, route_type: str) -> int | None:
    found = conn.execute(
        select(model_offers.c.id).where(
            model_offers.c.model_id == model_id, model_offers.c.route_type == route_type
        )
    ).scalar()
    return None if found is None else int(found)


def insert_offer(conn: Connection, model_id: int, route_type: str) -> int:
    stmt = (
        insert(model_offers)
        .values(model_id=model_id, route_type=route_type, enabled=1)
        .returning(model_offers.c.id)
    )
    return int(conn.execute(stmt).scalar_one())


def update_offer(conn: Connection, offer_id: int, values: dict[str, Any]) -> None:
    conn.execute(update(model_offers).where(model_offers.c.id == offer_id).values(**values))


def insert_price_version(conn: Connection, **values: Any) -> int:
    stmt = insert(price_versions).values(**values).returning(price_versions.c.id)
    return int(conn.execute(stmt).scalar_one())


def price_history(conn: Connection, model_id: int) -> list[RowMapping]:
    """Every price version of the model's offers, newest first."""
    stmt = (
        select(
            price_versions.c.id,
            model_offers.c.route_type,
            (price_versions.c.id == model_offers.c.price_version_id).label("current"),
            price_versions.c.currency,
            price_versions.c.input_per_m_nanos,
            price_versions.c.output_per_m_nanos,
            price_versions.c.cached_input_per_m_nanos,
            price_versions.c.source,
            price_versions.c.created_by,
            price_versions.c.created_at,
        )
        .select_from(
            price_versions.join(model_offers, model_offers.c.id == price_versions.c.offer_id)
        )
        .where(model_offers.c.model_id == model_id)
        .order_by(price_versions.c.id.desc())
    )
    return list(conn.execute(stmt).mappings())


# Client-side refusals never reached a route; they say nothing about its health. Nor does an
# upstream's 4xx refusal of the request itself (a bad parameter): every route would refuse it.
# An upstream 401/403 blames the channel's own secret or account, so it counts (decision 0019).
_REQUEST_FAULT = and_(
    receipts.c.error_code == "upstream_rejected",
    receipts.c.http_status.between(400, 499),
    receipts.c.http_status.not_in((401, 403)),
)
_ROUTED = and_(receipts.c.status.in_(("ok", "failed", "partial")), not_(_REQUEST_FAULT))
# A stream the client itself cut short was served fine up to the cut.
_SUCCEEDED = (receipts.c.status == "ok") | and_(
    receipts.c.status == "partial", receipts.c.client_disconnected == 1
)


def health_counts(conn: Connection, since_us: int) -> list[RowMapping]:
    """(model, route_type, requests, succeeded) over receipts created at or after ``since_us``."""
    stmt = (
        select(
            receipts.c.model,
            receipts.c.route_type,
            func.count().label("requests"),
            func.sum(case((_SUCCEEDED, 1), else_=0)).label("succeeded"),
        )
        .where(receipts.c.created_at >= since_us, _ROUTED)
        .group_by(receipts.c.model, receipts.c.route_type)
    )
    return list(conn.execute(stmt).mappings())


def success_latency_at(
    conn: Connection, *, model: str, route_type: str, since_us: int, offset: int
) -> int | None:
    """The ``offset``-th smallest latency (µs) of the successful requests in the window."""
    stmt = (
        select(receipts.c.latency_us)
        .where(
            receipts.c.created_at >= since_us,
            receipts.c.model == model,
            receipts.c.route_type == route_type,
            _SUCCEEDED,
        )
        .order_by(receipts.c.latency_us)
        .limit(1)
        .offset(offset)
    )
    found = conn.execute(stmt).scalar()
    return None if found is None else int(found)
