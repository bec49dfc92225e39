"""Usage: the user's receipts (successful and failed) filtered by key, project, model, route
type, status and a half-open range of UTC days [from, to); a chart of spend per day, bucket and
model over that range (inline SVG with the exact figures in a table); a receipt with every
field and its ledger entry."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from tallygate.errors import BadRequest
from tallygate.keys import service as keys
from tallygate.kit.clock import from_epoch_us, to_epoch_us
from tallygate.receipts import service as receipts
from tallygate.receipts.service import DAY_US
from tallygate.web.auth import SignedIn
from tallygate.web.charts import spend_charts
from tallygate.web.params import MAX_ID
from tallygate.web.render import page
from tallygate.web.wallet import day

router = APIRouter(include_in_schema=False)
CHART_DAYS = 30
"""Without a range, the chart shows the last 30 days (the list shows everything)."""
MAX_CHART_DAYS = 366
STATUSES = ("ok", "failed", "partial", "rejected")
ROUTE_TYPES = ("official", "routed")


def _midnight(d: dt.date) -> int:
    return to_epoch_us(dt.datetime.combine(d, dt.time(), dt.UTC))


@router.get("/receipts")
def list_receipts(
    request: Request,
    v: SignedIn,
    status: Annotated[str, Query(max_length=16)] = "",
    model: Annotated[str, Query(max_length=200)] = "",
    key: Annotated[str, Query(max_length=20, description="key id")] = "",
    project: Annotated[str, Query(max_length=200)] = "",
    route_type: Annotated[str, Query(max_length=16)] = "",
    since: Annotated[str, Query(max_length=10, description="from this UTC day")] = "",
    until: Annotated[str, Query(max_length=10, description="up to this UTC day, excluded")] = "",
    cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    assert v.user is not None
    if status and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    if route_type and route_type not in ROUTE_TYPES:
        raise BadRequest("route type must be official or routed", param="route_type")
    if key and not key.isdigit():
        raise BadRequest("choose one of your keys", param="key")
    first, last = day(since, "from"), day(until, "to")
    if first and last and last <= first:
        raise BadRequest("the range is empty: “to” must be after “from”", param="until")
    f = receipts.Filter(
        user_id=v.user.id,
        status=status or None,
        model=model.strip() or None,
        key_id=int(key) if key else None,
        project=project.strip() or None,
        route_type=route_type or None,
        since_us=_midnight(first) if first else None,
        until_us=_midnight(last) if last else None,
    )
    # The chart's days: the chosen range, or the last CHART_DAYS days up to today.
    today = v.state.now_us() // DAY_US * DAY_US
    chart_end = f.until_us if f.until_us is not None else today + DAY_US
    chart_start = f.since_us if f.since_us is not None else chart_end - CHART_DAYS * DAY_US
    clipped = (chart_end - chart_start) // DAY_US > MAX_CHART_DAYS
    if clipped:
        chart_start = chart_end - MAX_CHART_DAYS * DAY_US
    days = (chart_end - chart_start) // DAY_US
    with v.state.db.read() as conn:
        result = receipts.page(
            conn,
            v.state.ledger,
            user_id=f.user_id,
            status=f.status,
            model=f.model,
            key_id=f.key_id,
            project=f.project,
            route_type=f.route_type,
            since_us=f.since_us,
            until_us=f.until_us,
            cursor=cursor,
            limit=50,
        )
        spend = receipts.daily_spend(
            conn,
            v.state.ledger,
            dataclasses.replace(f, since_us=chart_start, until_us=chart_end),
        )
        my_keys = keys.list_keys(
            conn,
            user_id=v.user.id,
            currencies=v.state.ledger.currencies,
            now_us=v.state.now_us(),
            limit=200,
        ).items
    charts = spend_charts(
        spend, first_day_us=chart_start, days=days, currencies=v.state.ledger.currencies
    )
    filters = {
        "status": status,
        "model": model.strip(),
        "key": key,
        "project": project.strip(),
        "route_type": route_type,
        "since": first.isoformat() if first else "",
        "until": last.isoformat() if last else "",
    }
    exports = {
        "status": f.status,
        "model": f.model,
        "key_id": f.key_id,
        "project": f.project,
        "route_type": f.route_type,
        "since": f"{first.isoformat()}T00:00:00Z" if first else None,
        "until": f"{last.isoformat()}T00:00:00Z" if last else None,
    }
    return page(
        request,
        v,
        "receipts.html",
        title="Usage",
        nav="receipts",
        receipts=result.items,
        next_cursor=result.next_cursor,
        filters=filters,
        export_params={k: val for k, val in exports.items() if val is not None},
        keys=my_keys,
        projects=sorted({k.project for k in my_keys if k.project}),
        statuses=STATUSES,
        route_types=ROUTE_TYPES,
        charts=charts,
        chart_from=_day_text(chart_start),
        chart_to=_day_text(chart_end - DAY_US),
        chart_clipped=clipped,
        chart_default=f.since_us is None and f.until_us is None,
    )


def _day_text(day_us: int) -> str:
    return from_epoch_us(day_us).strftime("%Y-%m-%d")


@router.get("/receipts/{request_id}")
def receipt(
    request: Request, request_id: Annotated[str, Path(max_length=64)], v: SignedIn
) -> Response:
    assert v.user is not None
    with v.state.db.read() as conn:
        r = receipts.get(conn, v.state.ledger, request_id, v.user.id)
    return page(request, v, "receipt.html", title=f"Receipt {r.request_id}", nav="receipts", r=r)
