"""Console pages: the usage report and exports.

The usage report reads the exports service's own ``usage`` rows (receipts grouped by model,
route type, channel, project and currency, summed in SQL) and totals them by the dimension the
operator picks — integer nano-units, per currency, never mixed. The exports page offers every
export the exports service has; its forms lead (through a redirect that drops empty fields) to
the operator JSON API's download endpoints, which accept the session cookie."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from tallygate.errors import BadRequest
from tallygate.exports import queries
from tallygate.exports import service as exports
from tallygate.kit.clock import to_epoch_us
from tallygate.web.operator import Operator
from tallygate.web.render import LABELS, page
from tallygate.web.wallet import day

router = APIRouter(prefix="/operator", include_in_schema=False)

DIMENSIONS = {
    "model": "Model",
    "route_type": "Route type",
    "channel": "Channel",
    "project": "Project",
}
SUMS = ("requests", "succeeded", "failed", "input_tokens", "output_tokens", "charge")
Text = Annotated[str, Query(max_length=200)]
DayText = Annotated[str, Query(max_length=10)]


def _midnight(d: dt.date) -> int:
    return to_epoch_us(dt.datetime.combine(d, dt.time(), dt.UTC))


def _iso(d: dt.date | None) -> str:
    return f"{d.isoformat()}T00:00:00Z" if d else ""


def _range(since: str, until: str) -> tuple[dt.date | None, dt.date | None]:
    first, last = day(since, "from"), day(until, "to")
    if first and last and last <= first:
        raise BadRequest("the range is empty: “to” must be after “from”", param="until")
    return first, last


@router.get("/usage")
def usage_page(
    request: Request,
    v: Operator,
    group: Annotated[str, Query(max_length=16)] = "model",
    since: DayText = "",
    until: DayText = "",
    model: Text = "",
    route_type: Text = "",
    project: Text = "",
    user_id: Annotated[str, Query(max_length=12)] = "",
) -> Response:
    """Requests, outcomes, tokens and charges over a half-open range of UTC days [from, to),
    totalled by model, route type, channel or project, with every row underneath."""
    if group not in DIMENSIONS:
        raise BadRequest("group by model, route_type, channel or project", param="group")
    if route_type and route_type not in ("official", "routed"):
        raise BadRequest("route type must be official or routed", param="route_type")
    if user_id and not user_id.isdigit():
        raise BadRequest("user must be a user id (a number)", param="user_id")
    first, last = _range(since, until)
    filters = queries.Filters(
        since_us=_midnight(first) if first else None,
        until_us=_midnight(last) if last else None,
        model=model or None,
        route_type=route_type or None,
        project=project or None,
        user_id=int(user_id) if user_id else None,
    )
    with v.state.db.read() as conn:
        # SUM() is a decimal on PostgreSQL: integers here, so money stays exact nano-units.
        rows = [
            {**r, **{f: int(r[f] or 0) for f in SUMS}} for r in queries.usage_rows(conn, filters)
        ]
    totals: dict[tuple[str, str], dict[str, int]] = {}
    grand: dict[str, dict[str, int]] = {}
    for r in rows:
        for t in (
            totals.setdefault((str(r[group]), r["currency"]), dict.fromkeys(SUMS, 0)),
            grand.setdefault(r["currency"], dict.fromkeys(SUMS, 0)),
        ):
            for field in SUMS:
                t[field] += r[field]
    download = {
        "format": "csv",
        "since": _iso(first),
        "until": _iso(last),
        "model": model,
        "route_type": route_type,
        "project": project,
        "user_id": user_id,
    }
    return page(
        request,
        v,
        "operator_usage.html",
        title="Usage report",
        nav="operator",
        subnav="usage",
        rows=rows,
        totals=sorted(totals.items()),
        grand=sorted(grand.items()),
        group=group,
        dimensions=DIMENSIONS,
        form={
            "since": first.isoformat() if first else "",
            "until": last.isoformat() if last else "",
            "model": model,
            "route_type": route_type,
            "project": project,
            "user_id": user_id,
        },
        csv_url="/admin/api/exports/usage?" + urlencode({k: x for k, x in download.items() if x}),
    )


EXPORT_TITLES = {
    "requests": "Requests (receipts, every field)",
    "ledger": "Ledger entries",
    "topups": "Top-ups",
    "refunds": "Refunds",
    "redemptions": "Code redemptions and starter grants",
    "audit": "Audit trail",
    "usage": "Usage report (grouped)",
}
FILTERS = {
    "requests": ("user_id", "key_id", "project", "model", "route_type", "status", "bucket"),
    "ledger": ("user_id", "bucket", "kind"),
    "topups": ("user_id", "bucket", "status"),
    "refunds": ("user_id", "bucket", "status"),
    "redemptions": ("user_id", "bucket"),
    "audit": (),
    "usage": ("user_id", "key_id", "project", "model", "route_type", "bucket"),
}


@router.get("/exports")
def exports_page(request: Request, v: Operator) -> Response:
    return page(
        request,
        v,
        "operator_exports.html",
        title="Exports",
        nav="operator",
        subnav="exports",
        exports=[
            (n, EXPORT_TITLES.get(n, n), FILTERS.get(n, ())) for n in exports.OPERATOR_EXPORTS
        ],
        formats=list(exports.FORMATS),
        buckets=[(b, LABELS[b]) for b in ("credit", "routed")],
    )


@router.get("/exports/download")
def download(
    v: Operator,
    name: Annotated[str, Query(max_length=32)] = "",
    format: Annotated[str, Query(max_length=8)] = "csv",
    since: DayText = "",
    until: DayText = "",
    user_id: Annotated[str, Query(max_length=12)] = "",
    key_id: Annotated[str, Query(max_length=12)] = "",
    bucket: Annotated[str, Query(max_length=16)] = "",
    project: Text = "",
    model: Text = "",
    route_type: Text = "",
    status: Text = "",
    kind: Text = "",
) -> Response:
    """Check the form, drop its empty fields and send the browser to the export's download
    (``/admin/api/exports/<name>``): a readable page for a mistake instead of a JSON 422."""
    if not name:
        return RedirectResponse("/operator/exports", status_code=303)
    exports.check(name, format, exports.OPERATOR_EXPORTS)
    first, last = _range(since, until)
    for field, value in (("user", user_id), ("key", key_id)):
        if value and not value.isdigit():
            raise BadRequest(f"{field} must be an id (a number)", param=f"{field}_id")
    if bucket and bucket not in LABELS:
        raise BadRequest("bucket must be credit or routed", param="bucket")
    given = {
        "format": format,
        "since": _iso(first),
        "until": _iso(last),
        "user_id": user_id,
        "key_id": key_id,
        "bucket": bucket,
        "project": project,
        "model": model,
        "route_type": route_type,
        "status": status,
        "kind": kind,
    }
    query = urlencode({k: x for k, x in given.items() if x})
    return RedirectResponse(f"/admin/api/exports/{name}?{query}", status_code=303)
