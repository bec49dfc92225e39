"""Whose fault a failed request was, in the marketplace's route health summary: an upstream's
4xx refusal of the request itself (a bad parameter) says nothing about the route and is not
counted; a route that failed — every channel erring, or an upstream refusing the channel's own
secret (401, answered as 502) or account (403) — is (docs/decisions/0019). On both
databases."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import insert

from tallygate.kit.clock import to_epoch_us
from tallygate.models.receipts import receipts
from tests.catalog.helpers import add_model, as_user, ok, set_prices
from tests.fixtures.server import LiveServer

MODEL = "gpt-4o-mini"
_ids = itertools.count(1)


def failed(live: LiveServer, http_status: int, error_code: str) -> None:
    with live.db.begin() as conn:
        conn.execute(
            insert(receipts).values(
                request_id=f"req-fault-{next(_ids)}",
                created_at=to_epoch_us(live.clock.now()) - 60_000_000,
                user_id=1,
                endpoint="chat.completions",
                model=MODEL,
                route_type="official",
                status="failed",
                http_status=http_status,
                error_code=error_code,
                latency_us=50_000,
            )
        )


def served(live: LiveServer) -> None:
    with live.db.begin() as conn:
        conn.execute(
            insert(receipts).values(
                request_id=f"req-fault-{next(_ids)}",
                created_at=to_epoch_us(live.clock.now()) - 60_000_000,
                user_id=1,
                endpoint="chat.completions",
                model=MODEL,
                route_type="official",
                status="ok",
                http_status=200,
                latency_us=120_000,
            )
        )


def health(live: LiveServer) -> dict[str, Any]:
    with as_user(live, live.make.user()) as http:
        market = ok(http.get("/api/marketplace"))
    (offer,) = [o for m in market["models"] for o in m["offers"] if o["route_type"] == "official"]
    return dict(offer["health"])


def test_only_failures_of_the_route_lower_its_success_rate(live: LiveServer) -> None:
    with as_user(live, live.make.operator()) as http:
        add_model(http, MODEL)
        set_prices(http, MODEL, "official", "0.15", "0.60")
    for _ in range(3):
        served(live)
    failed(live, 400, "upstream_rejected")  # the request's own fault: not counted
    failed(live, 404, "upstream_rejected")
    failed(live, 422, "upstream_rejected")
    assert health(live)["requests"] == 3 and health(live)["success_rate"] == 1.0

    failed(live, 502, "upstream_failed")  # every channel erred
    failed(live, 502, "upstream_rejected")  # an upstream refused the channel's secret (401)
    failed(live, 403, "upstream_rejected")  # or the channel's account
    failed(live, 503, "model_unavailable")  # every circuit open
    summary = health(live)
    assert (summary["requests"], summary["succeeded"]) == (7, 3)
    assert summary["success_rate"] == round(3 / 7, 4)
