"""Channels for operators: create, update, enable/disable, model mappings.

The secret is encrypted with the server's secret key before it reaches the database and is
never returned, logged or audited (the audit trail shows "***"). Every change is audited and
bumps the config version in the caller's transaction, so gateway processes pick it up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, RowMapping

from tallygate.audit import service as audit
from tallygate.catalog import repository as catalog_repo
from tallygate.channels import repository as repo
from tallygate.channels.schemas import (
    ChannelCreate,
    ChannelOut,
    ChannelUpdate,
    MappingsPut,
    ModelMapping,
)
from tallygate.errors import BadRequest, Conflict, NotFound
from tallygate.kit import config_version, crypto
from tallygate.kit.clock import from_epoch_us
from tallygate.ledger.tx import from_connection

REDACTED = "***"
MAX_TIMEOUT_SECONDS = 3600


class InvalidChannel(BadRequest):
    code = "invalid_channel"


class ChannelNotFound(NotFound):
    code = "channel_not_found"


class ChannelExists(Conflict):
    code = "channel_exists"


@dataclass(frozen=True, slots=True)
class TestTarget:
    """What a channel test needs; holds the decrypted secret, so never render or log it."""

    base_url: str
    secret: str
    model: str
    timeout_seconds: float

    def __repr__(self) -> str:
        return f"TestTarget(base_url={self.base_url!r}, model={self.model!r}, secret=***)"


# ---- validation -------------------------------------------------------------------------------


def check_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidChannel(
            "base_url must be an http:// or https:// URL such as https://api.openai.com/v1",
            param="base_url",
        )
    if parts.username or parts.password:
        raise InvalidChannel(
            "base_url must not carry credentials: put the key in `secret`", param="base_url"
        )
    if parts.query or parts.fragment:
        raise InvalidChannel("base_url must not have a query or fragment", param="base_url")
    return url


def _text(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidChannel(f"{field} must not be empty", param=field)
    return value


def _check_numbers(values: Mapping[Any, Any]) -> None:
    if values.get("weight") is not None and values["weight"] < 1:
        raise InvalidChannel("weight must be at least 1", param="weight")
    timeout = values.get("timeout_seconds")
    if timeout is not None and not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
        raise InvalidChannel(
            f"timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS}", param="timeout_seconds"
        )
    priority = values.get("priority")
    if priority is not None and abs(priority) > 1_000_000:
        raise InvalidChannel("priority must be between -1000000 and 1000000", param="priority")


# ---- views ------------------------------------------------------------------------------------


def _view(c: Mapping[Any, Any], mapped: list[RowMapping]) -> ChannelOut:
    return ChannelOut(
        id=int(c["id"]),
        name=str(c["name"]),
        label=str(c["label"]),
        kind=c["kind"],
        base_url=str(c["base_url"]),
        has_secret=bool(c["has_secret"]),
        route_type=c["route_type"],
        priority=int(c["priority"]),
        weight=int(c["weight"]),
        enabled=bool(c["enabled"]),
        timeout_seconds=int(c["timeout_seconds"]),
        created_at=from_epoch_us(int(c["created_at"])),
        models=[
            ModelMapping(model=str(m["model_name"]), upstream_model=str(m["upstream_model"]))
            for m in mapped
        ],
    )


def _row(conn: Connection, channel_id: int) -> RowMapping:
    row = repo.channel(conn, channel_id)
    if row is None:
        raise ChannelNotFound(f"no channel with id {channel_id}")
    return row


def get_channel(conn: Connection, channel_id: int) -> ChannelOut:
    return _view(_row(conn, channel_id), repo.mappings(conn, [channel_id]))


def list_channels(conn: Connection) -> list[ChannelOut]:
    by_channel: dict[int, list[RowMapping]] = {}
    for m in repo.mappings(conn):
        by_channel.setdefault(int(m["channel_id"]), []).append(m)
    return [_view(c, by_channel.get(int(c["id"]), [])) for c in repo.all_channels(conn)]


def _audit_state(view: ChannelOut) -> dict[str, Any]:
    state = view.model_dump(mode="json", exclude={"created_at", "has_secret", "id"})
    state["secret"] = REDACTED if view.has_secret else None
    return state


def _record(
    conn: Connection,
    *,
    operator: str,
    now_us: int,
    action: str,
    channel_id: int,
    before: ChannelOut | None,
    after: ChannelOut,
    reason: str = "",
) -> None:
    tx = from_connection(conn)
    audit.record(
        tx,
        now_us=now_us,
        actor=operator,
        source="operator",
        action=action,
        target=f"channel:{channel_id}",
        before=None if before is None else _audit_state(before),
        after=_audit_state(after),
        reason=reason,
    )
    config_version.bump(tx, now_us)


# ---- changes ----------------------------------------------------------------------------------


def create_channel(
    conn: Connection, body: ChannelCreate, *, operator: str, secret_key: str, now_us: int
) -> ChannelOut:
    name = _text(body.name, "name")
    _check_numbers(body.model_dump())
    if repo.channel_id_by_name(conn, name) is not None:
        raise ChannelExists(f"a channel named {name!r} already exists", param="name")
    channel_id = repo.insert_channel(
        conn,
        name=name,
        label=_text(body.label, "label"),
        kind=body.kind,
        base_url=check_base_url(body.base_url),
        secret_ciphertext=crypto.encrypt(secret_key, body.secret.strip()),
        route_type=body.route_type,
        priority=body.priority,
        weight=body.weight,
        enabled=int(body.enabled),
        timeout_seconds=body.timeout_seconds,
        created_at=now_us,
    )
    after = get_channel(conn, channel_id)
    _record(
        conn,
        operator=operator,
        now_us=now_us,
        action="channel.create",
        channel_id=channel_id,
        before=None,
        after=after,
    )
    return after


def update_channel(
    conn: Connection,
    channel_id: int,
    body: ChannelUpdate,
    *,
    operator: str,
    secret_key: str,
    now_us: int,
    action: str = "channel.update",
) -> ChannelOut:
    before = get_channel(conn, channel_id)
    given = {f: getattr(body, f) for f in body.model_fields_set}
    given = {f: v for f, v in given.items() if v is not None}
    _check_numbers(given)
    values: dict[str, Any] = {}
    for field, value in given.items():
        if field == "label":
            values["label"] = _text(value, "label")
        elif field == "base_url":
            values["base_url"] = check_base_url(value)
        elif field == "secret":
            values["secret_ciphertext"] = crypto.encrypt(secret_key, value.strip())
        elif field == "enabled":
            values["enabled"] = int(value)
        else:
            values[field] = value
    repo.update_channel(conn, channel_id, values)
    after = get_channel(conn, channel_id)
    if _audit_state(after) != _audit_state(before) or "secret_ciphertext" in values:
        _record(
            conn,
            operator=operator,
            now_us=now_us,
            action=action,
            channel_id=channel_id,
            before=before,
            after=after,
            reason="secret replaced" if "secret_ciphertext" in values else "",
        )
    return after


def set_enabled(
    conn: Connection, channel_id: int, enabled: bool, *, operator: str, now_us: int
) -> ChannelOut:
    return update_channel(
        conn,
        channel_id,
        ChannelUpdate(enabled=enabled),
        operator=operator,
        secret_key="",  # unused: no secret in this update
        now_us=now_us,
        action="channel.enable" if enabled else "channel.disable",
    )


def put_mappings(
    conn: Connection, channel_id: int, body: MappingsPut, *, operator: str, now_us: int
) -> ChannelOut:
    before = get_channel(conn, channel_id)
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(body.models):
        model, upstream = m.model.strip(), m.upstream_model.strip()
        if catalog_repo.model_by_name(conn, model) is None:
            raise InvalidChannel(
                f"models[{i}]: no public model named {model!r}: create it in the catalog first",
                param=f"models[{i}].model",
            )
        if not upstream:
            raise InvalidChannel(
                f"models[{i}]: upstream_model must not be empty",
                param=f"models[{i}].upstream_model",
            )
        if any(model == p[0] for p in pairs):
            raise InvalidChannel(f"models[{i}]: {model!r} is mapped twice", param="models")
        pairs.append((model, upstream))
    repo.replace_mappings(conn, channel_id, pairs)
    after = get_channel(conn, channel_id)
    if after.models != before.models:
        _record(
            conn,
            operator=operator,
            now_us=now_us,
            action="channel.models",
            channel_id=channel_id,
            before=before,
            after=after,
        )
    return after


def test_target(
    conn: Connection, channel_id: int, *, model: str | None, secret_key: str
) -> TestTarget:
    view = get_channel(conn, channel_id)
    upstream = (model or "").strip() or (view.models[0].upstream_model if view.models else "")
    if not upstream:
        raise InvalidChannel(
            "this channel maps no model yet: name the upstream model to test with", param="model"
        )
    try:
        secret = crypto.decrypt(secret_key, repo.secret_ciphertext(conn, channel_id))
    except ValueError:
        raise InvalidChannel(
            "the channel's secret cannot be decrypted with this server's secret key: set the "
            "secret again"
        ) from None
    return TestTarget(view.base_url, secret, upstream, float(min(view.timeout_seconds, 30)))
