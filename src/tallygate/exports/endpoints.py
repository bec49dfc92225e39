"""Downloads: a user's own requests, ledger, top-ups, refunds and redemptions; operators'
exports of anyone or everyone, the audit trail and the usage report; reconciliation
statements."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from tallygate.exports import service
from tallygate.exports.queries import Filters
from tallygate.state import State
from tallygate.users.dependencies import CurrentUser

router = APIRouter(prefix="/api/exports", tags=["exports"])
admin_router = APIRouter(prefix="/exports", tags=["admin"])

Format = Annotated[Literal["csv", "jsonl"], Query(description="csv (RFC 4180) or jsonl")]
Since = Annotated[dt.datetime | None, Query(description="inclusive start, ISO 8601 (UTC)")]
Until = Annotated[dt.datetime | None, Query(description="exclusive end, ISO 8601 (UTC)")]
Bucket = Annotated[Literal["credit", "routed"] | None, Query()]
Text = Annotated[str | None, Query(max_length=200)]


def _filters(since: dt.datetime | None, until: dt.datetime | None, **values: Any) -> Filters:
    return Filters(since_us=service.to_us(since), until_us=service.to_us(until), **values)


def _download(state: Any, name: str, fmt: str, filters: Filters) -> StreamingResponse:
    return StreamingResponse(
        service.stream(state.db, name, fmt, filters),
        media_type=service.FORMATS[fmt],
        headers={"content-disposition": f'attachment; filename="tallygate-{name}.{fmt}"'},
    )


@router.get("/statement")
def my_statement(
    user: CurrentUser,
    state: State,
    bucket: Literal["credit", "routed"],
    since: Since = None,
    until: Until = None,
    rows: Annotated[bool, Query(description="include the ledger rows")] = False,
) -> dict[str, Any]:
    """Opening balance + movements by kind = closing balance, with the debt beside it."""
    return service.statement_with_rows(
        state.db,
        user_id=user.id,
        bucket=bucket,
        since_us=service.to_us(since),
        until_us=service.to_us(until),
        rows=rows,
    )


@router.get("/{name}")
def my_export(
    name: Annotated[str, Path(description="requests, ledger, topups, refunds or redemptions")],
    user: CurrentUser,
    state: State,
    format: Format = "csv",
    since: Since = None,
    until: Until = None,
    bucket: Bucket = None,
    key_id: int | None = None,
    project: Text = None,
    model: Text = None,
    route_type: Text = None,
    status: Text = None,
    kind: Text = None,
) -> StreamingResponse:
    service.check(name, format, service.USER_EXPORTS)
    return _download(
        state,
        name,
        format,
        _filters(
            since,
            until,
            user_id=user.id,
            bucket=bucket,
            key_id=key_id,
            project=project,
            model=model,
            route_type=route_type,
            status=status,
            kind=kind,
        ),
    )


@admin_router.get("/statement")
def statement(
    state: State,
    user_id: int,
    bucket: Literal["credit", "routed"],
    since: Since = None,
    until: Until = None,
    rows: bool = False,
) -> dict[str, Any]:
    return service.statement_with_rows(
        state.db,
        user_id=user_id,
        bucket=bucket,
        since_us=service.to_us(since),
        until_us=service.to_us(until),
        rows=rows,
    )


@admin_router.get("/{name}")
def export(
    name: Annotated[
        str, Path(description="requests, ledger, topups, refunds, redemptions, audit or usage")
    ],
    state: State,
    format: Format = "csv",
    since: Since = None,
    until: Until = None,
    user_id: int | None = None,
    bucket: Bucket = None,
    key_id: int | None = None,
    project: Text = None,
    model: Text = None,
    route_type: Text = None,
    status: Text = None,
    kind: Text = None,
) -> StreamingResponse:
    service.check(name, format, service.OPERATOR_EXPORTS)
    return _download(
        state,
        name,
        format,
        _filters(
            since,
            until,
            user_id=user_id,
            bucket=bucket,
            key_id=key_id,
            project=project,
            model=model,
            route_type=route_type,
            status=status,
            kind=kind,
        ),
    )
