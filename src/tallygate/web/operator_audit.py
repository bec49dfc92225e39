"""Console pages: the audit trail with filters (actor, action, target, time range), paginated
newest first, and a button that verifies the whole hash chain and shows the result."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tallygate.audit import service as audit
from tallygate.kit.clock import to_epoch_us
from tallygate.web.operator import Operator, OperatorForm
from tallygate.web.params import MAX_ID
from tallygate.web.render import page

router = APIRouter(prefix="/operator", include_in_schema=False)
PAGE = 50


def _instant(text: str, name: str, *, end: bool = False) -> int | None:
    """``2026-01-01`` or ``2026-01-01T12:30`` (UTC) as epoch microseconds; a bare date as
    ``until`` means the end of that day. ValueError with a readable message otherwise."""
    text = text.strip()
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{name} must be a date like 2026-01-31 or a time like 2026-01-31T12:00 (UTC)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if end and len(text) == 10:
        when += dt.timedelta(days=1)
    return to_epoch_us(when)


def _trail(
    request: Request,
    v: Operator,
    *,
    actor: str,
    action: str,
    target: str,
    since: str,
    until: str,
    before: int | None,
    verified: list[str] | None = None,
) -> Response:
    error = None
    try:
        since_us = _instant(since, "from")
        until_us = _instant(until, "until", end=True)
    except ValueError as exc:
        error, since_us, until_us = str(exc), None, None
    with v.state.db.read() as conn:
        tx = v.state.ledger.tx(conn)
        events = audit.search(
            tx,
            actor=actor or None,
            action=action or None,
            target=target or None,
            since_us=since_us,
            until_us=until_us,
            before_seq=before,
            limit=PAGE + 1,
        )
        actions = audit.actions(tx)
    filters = {"actor": actor, "action": action, "target": target, "since": since, "until": until}
    more = len(events) > PAGE
    older = (
        "/operator/audit?" + urlencode({**filters, "before": events[PAGE - 1].seq})
        if more
        else None
    )
    return page(
        request,
        v,
        "operator_audit.html",
        status_code=400 if error else 200,
        title="Audit trail",
        nav="operator",
        subnav="audit",
        error=error,
        events=events[:PAGE],
        actions=actions,
        f=filters,
        older=older,
        newest="/operator/audit?" + urlencode(filters) if before else None,
        verified=verified,
    )


Filter = Annotated[str, Query(max_length=200)]


@router.get("/audit")
def trail(
    request: Request,
    v: Operator,
    actor: Filter = "",
    action: Filter = "",
    target: Filter = "",
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    return _trail(
        request,
        v,
        actor=actor,
        action=action,
        target=target,
        since=since,
        until=until,
        before=before,
    )


@router.post("/audit/verify")
def verify(request: Request, v: OperatorForm) -> Response:
    """Recompute every event's hash and the chain head; show each problem, or that it holds."""
    with v.state.db.snapshot() as conn:
        problems = audit.verify(v.state.ledger.tx(conn))
    return _trail(
        request,
        v,
        actor="",
        action="",
        target="",
        since="",
        until="",
        before=None,
        verified=problems,
    )
