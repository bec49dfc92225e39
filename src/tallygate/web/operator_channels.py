"""Console pages: channels: create, edit, disable, test, health and circuit state.

Every write goes through ``tallygate.channels.service`` (audited, config version bumped in the
same transaction); afterwards this process's gateway reloads its snapshot at once, and every
other process within its refresh interval. The secret is write-only: a page only ever says
whether one is set."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import anyio.from_thread
import orjson
from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import Connection, and_, or_, select

from tallygate.channels import probe
from tallygate.channels import service as channels
from tallygate.channels.schemas import (
    ChannelCreate,
    ChannelTestResult,
    ChannelUpdate,
    MappingsPut,
    ModelMapping,
)
from tallygate.errors import TallygateError
from tallygate.models.receipts import receipts
from tallygate.web.auth import Viewer
from tallygate.web.operator import Operator, OperatorForm
from tallygate.web.params import MAX_ID
from tallygate.web.render import page

router = APIRouter(prefix="/operator", include_in_schema=False)

ChannelId = Annotated[int, Path(ge=1, le=MAX_ID)]
Short = Annotated[str, Form(max_length=500)]
Secret = Annotated[str, Form(max_length=4000)]
Mappings = Annotated[str, Form(max_length=20000)]
ROUTE_TYPES = ("official", "routed")


def refresh_gateway(request: Request) -> None:
    """Make this process's gateway load the new configuration now (from a worker thread)."""
    runtime = getattr(request.app.state, "gateway", None)
    if runtime is not None:
        anyio.from_thread.run(runtime.refresh)


def _health(request: Request) -> dict[int, list[Any]]:
    runtime = getattr(request.app.state, "gateway", None)
    by_channel: dict[int, list[Any]] = {}
    if runtime is None:
        return by_channel
    for h in runtime.health.snapshot():
        by_channel.setdefault(h.channel_id, []).append(h)
    return by_channel


def parse_mappings(text: str) -> MappingsPut:
    """One ``public model = upstream model id`` per line (``=`` optional when both are the
    same); blank lines and ``#`` comments are skipped."""
    models = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        public, sep, upstream = line.partition("=")
        public, upstream = public.strip(), (upstream.strip() if sep else public.strip())
        if not public or not upstream:
            raise channels.InvalidChannel(
                f"line {n} of the model mapping must read 'public model = upstream model id'",
                param="models",
            )
        models.append(ModelMapping(model=public, upstream_model=upstream))
    return MappingsPut(models=models)


def mappings_text(models: list[ModelMapping]) -> str:
    return "\n".join(f"{m.model} = {m.upstream_model}" for m in models)


def _int(value: str, field: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise channels.InvalidChannel(f"{field} must be a whole number", param=field) from None


# ---- list and create ---------------------------------------------------------------------------


@router.get("/channels")
def channels_page(request: Request, v: Operator) -> Response:
    with v.state.db.read() as conn:
        listing = channels.list_channels(conn)
    return page(
        request,
        v,
        "operator_channels.html",
        title="Channels",
        nav="operator",
        subnav="channels",
        channels=listing,
        health=_health(request),
    )


NEW_FORM = {
    "name": "",
    "label": "",
    "base_url": "",
    "route_type": "official",
    "priority": "0",
    "weight": "1",
    "timeout_seconds": "120",
    "models": "",
}


def _new_page(
    request: Request,
    v: Viewer,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return page(
        request,
        v,
        "operator_channel_new.html",
        status_code=status_code,
        title="New channel",
        nav="operator",
        subnav="channels",
        form=form or NEW_FORM,
        error=error,
        route_types=ROUTE_TYPES,
    )


@router.get("/channels/new")
def new_channel_page(request: Request, v: Operator) -> Response:
    return _new_page(request, v)


@router.post("/channels")
def create_channel(
    request: Request,
    v: OperatorForm,
    name: Short = "",
    label: Short = "",
    base_url: Short = "",
    secret: Secret = "",
    route_type: Short = "",
    priority: Short = "0",
    weight: Short = "1",
    timeout_seconds: Short = "120",
    models: Mappings = "",
) -> Response:
    """Create a channel and its model mapping in one transaction: nothing is written when any
    part is refused."""
    assert v.user is not None
    form = {
        "name": name,
        "label": label,
        "base_url": base_url,
        "route_type": route_type,
        "priority": priority,
        "weight": weight,
        "timeout_seconds": timeout_seconds,
        "models": models,
    }
    try:
        if route_type not in ROUTE_TYPES:
            raise channels.InvalidChannel("choose the route type: official or routed")
        if not name.strip() or not label.strip():
            raise channels.InvalidChannel("give the channel a name and a public label")
        body = ChannelCreate(
            name=name.strip(),
            label=label.strip(),
            base_url=base_url,
            secret=secret,
            route_type=route_type,  # type: ignore[arg-type]
            priority=_int(priority, "priority"),
            weight=_int(weight, "weight"),
            timeout_seconds=_int(timeout_seconds, "timeout_seconds"),
        )
        mapping = parse_mappings(models)
        with v.state.db.begin() as conn:
            made = channels.create_channel(
                conn,
                body,
                operator=v.user.email,
                secret_key=v.state.settings.secret_key,
                now_us=v.state.now_us(),
            )
            if mapping.models:
                channels.put_mappings(
                    conn, made.id, mapping, operator=v.user.email, now_us=v.state.now_us()
                )
    except ValidationError:
        return _new_page(
            request, v, form=form, status_code=400, error="check the fields: some are too long"
        )
    except TallygateError as exc:
        return _new_page(request, v, form=form, status_code=exc.status, error=exc.message)
    refresh_gateway(request)
    return RedirectResponse(f"/operator/channels/{made.id}?saved=created", status_code=303)


# ---- one channel -------------------------------------------------------------------------------


def _channel_page(
    request: Request,
    v: Viewer,
    channel_id: int,
    *,
    status_code: int = 200,
    error: str | None = None,
    saved: str | None = None,
    form: dict[str, str] | None = None,
    mapping: str | None = None,
    tested: ChannelTestResult | None = None,
) -> Response:
    with v.state.db.read() as conn:
        channel = channels.get_channel(conn, channel_id)
        failures = _recent_failures(conn, channel_id, channel.label)
    return page(
        request,
        v,
        "operator_channel.html",
        status_code=status_code,
        title=f"Channel {channel.label}",
        nav="operator",
        subnav="channels",
        channel=channel,
        health=_health(request).get(channel_id, []),
        failures=failures,
        error=error,
        saved=saved,
        form=form
        or {
            "label": channel.label,
            "base_url": channel.base_url,
            "route_type": channel.route_type,
            "priority": str(channel.priority),
            "weight": str(channel.weight),
            "timeout_seconds": str(channel.timeout_seconds),
        },
        mapping=mappings_text(channel.models) if mapping is None else mapping,
        tested=tested,
        route_types=ROUTE_TYPES,
    )


def _recent_failures(conn: Connection, channel_id: int, label: str) -> list[dict[str, Any]]:
    """The channel's latest failed attempts (from the receipts' attempt lists, where a channel
    is named by its public label) and failed requests it answered, newest first."""
    needle = orjson.dumps({"channel": label}).decode()[1:-1]
    rows = conn.execute(
        select(
            receipts.c.request_id,
            receipts.c.created_at,
            receipts.c.model,
            receipts.c.status,
            receipts.c.channel_id,
            receipts.c.http_status,
            receipts.c.error_message,
            receipts.c.attempts_json,
        )
        .where(
            or_(
                and_(receipts.c.channel_id == channel_id, receipts.c.status != "ok"),
                receipts.c.attempts_json.contains(needle, autoescape=True),
            )
        )
        .order_by(receipts.c.id.desc())
        .limit(50)
    ).all()
    out: list[dict[str, Any]] = []
    for r in rows:
        attempts = [
            a
            for a in orjson.loads(r.attempts_json or "[]")
            if a.get("channel") == label and a.get("error")
        ]
        for a in attempts:
            out.append(
                {
                    "request_id": r.request_id,
                    "created_at": r.created_at,
                    "model": r.model,
                    "status": a.get("status"),
                    "error": a["error"],
                    "outcome": r.status,
                }
            )
        if not attempts and r.channel_id == channel_id and r.status != "ok":
            out.append(
                {
                    "request_id": r.request_id,
                    "created_at": r.created_at,
                    "model": r.model,
                    "status": r.http_status,
                    "error": r.error_message,
                    "outcome": r.status,
                }
            )
    return out[:10]


SAVED = {
    "created": "Channel created.",
    "updated": "Channel saved.",
    "models": "Model mapping saved.",
    "enabled": "Channel enabled: it takes traffic again.",
    "disabled": "Channel disabled: no request is routed to it.",
}


@router.get("/channels/{channel_id}")
def channel_page(
    request: Request, v: Operator, channel_id: ChannelId, saved: str | None = None
) -> Response:
    return _channel_page(request, v, channel_id, saved=SAVED.get(saved or ""))


@router.post("/channels/{channel_id}")
def update_channel(
    request: Request,
    v: OperatorForm,
    channel_id: ChannelId,
    label: Short = "",
    base_url: Short = "",
    secret: Secret = "",
    secret_action: Short = "keep",
    route_type: Short = "",
    priority: Short = "0",
    weight: Short = "1",
    timeout_seconds: Short = "120",
) -> Response:
    """Edit the channel; the secret changes only when "replace" (with a new value) or
    "remove" is chosen."""
    assert v.user is not None
    form = {
        "label": label,
        "base_url": base_url,
        "route_type": route_type,
        "priority": priority,
        "weight": weight,
        "timeout_seconds": timeout_seconds,
    }
    try:
        if route_type not in ROUTE_TYPES:
            raise channels.InvalidChannel("choose the route type: official or routed")
        fields: dict[str, Any] = {
            "label": label,
            "base_url": base_url,
            "route_type": route_type,
            "priority": _int(priority, "priority"),
            "weight": _int(weight, "weight"),
            "timeout_seconds": _int(timeout_seconds, "timeout_seconds"),
        }
        if secret_action == "replace":
            if not secret.strip():
                raise channels.InvalidChannel("enter the new secret to replace the old one")
            fields["secret"] = secret
        elif secret_action == "remove":
            fields["secret"] = ""
        with v.state.db.begin() as conn:
            channels.update_channel(
                conn,
                channel_id,
                ChannelUpdate(**fields),
                operator=v.user.email,
                secret_key=v.state.settings.secret_key,
                now_us=v.state.now_us(),
            )
    except ValidationError:
        return _channel_page(
            request, v, channel_id, status_code=400, form=form, error="some fields are too long"
        )
    except TallygateError as exc:
        if isinstance(exc, channels.ChannelNotFound):
            raise
        return _channel_page(
            request, v, channel_id, status_code=exc.status, form=form, error=exc.message
        )
    refresh_gateway(request)
    return RedirectResponse(f"/operator/channels/{channel_id}?saved=updated", status_code=303)


@router.post("/channels/{channel_id}/models")
def put_models(
    request: Request, v: OperatorForm, channel_id: ChannelId, models: Mappings = ""
) -> Response:
    assert v.user is not None
    try:
        mapping = parse_mappings(models)
        with v.state.db.begin() as conn:
            channels.put_mappings(
                conn, channel_id, mapping, operator=v.user.email, now_us=v.state.now_us()
            )
    except TallygateError as exc:
        if isinstance(exc, channels.ChannelNotFound):
            raise
        return _channel_page(
            request, v, channel_id, status_code=exc.status, mapping=models, error=exc.message
        )
    refresh_gateway(request)
    return RedirectResponse(f"/operator/channels/{channel_id}?saved=models", status_code=303)


def _set_enabled(request: Request, v: Viewer, channel_id: int, enabled: bool) -> Response:
    assert v.user is not None
    with v.state.db.begin() as conn:
        channels.set_enabled(
            conn, channel_id, enabled, operator=v.user.email, now_us=v.state.now_us()
        )
    refresh_gateway(request)
    saved = "enabled" if enabled else "disabled"
    return RedirectResponse(f"/operator/channels/{channel_id}?saved={saved}", status_code=303)


@router.post("/channels/{channel_id}/enable")
def enable_channel(request: Request, v: OperatorForm, channel_id: ChannelId) -> Response:
    return _set_enabled(request, v, channel_id, True)


@router.post("/channels/{channel_id}/disable")
def disable_channel(request: Request, v: OperatorForm, channel_id: ChannelId) -> Response:
    return _set_enabled(request, v, channel_id, False)


@router.post("/channels/{channel_id}/test")
async def test_channel(
    request: Request,
    v: OperatorForm,
    channel_id: ChannelId,
    model: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """A real minimal chat completion through the channel (the admin API's probe); the page
    shows its outcome."""

    def target() -> channels.TestTarget:
        with v.state.db.read() as conn:
            return channels.test_target(
                conn, channel_id, model=model or None, secret_key=v.state.settings.secret_key
            )

    try:
        found = await anyio.to_thread.run_sync(target)
    except TallygateError as exc:
        if isinstance(exc, channels.ChannelNotFound):
            raise
        status, message = exc.status, exc.message
        return await anyio.to_thread.run_sync(
            lambda: _channel_page(request, v, channel_id, status_code=status, error=message)
        )
    result = await probe.run(found)
    return await anyio.to_thread.run_sync(
        lambda: _channel_page(request, v, channel_id, tested=result)
    )
