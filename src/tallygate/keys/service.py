"""API keys: create (the key is shown once; only its SHA-256 is stored), list with spend so
far, update scopes and limits, revoke.

Functions take the request's connection first and never commit. Every change bumps the config
version in the same transaction, so gateway processes refresh their cached keys; revocation,
expiry and spend limits do not wait for that — the ledger's hold checks them itself."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping

from tallygate.audit import service as audit
from tallygate.errors import BadRequest, NotFound
from tallygate.keys import repository as repo
from tallygate.keys.schemas import (
    BucketSpend,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    KeyUpdate,
    SpendLimitIn,
)
from tallygate.keys.scopes import GLOB_RE, MAX_GLOB_LENGTH, MAX_GLOBS, ROUTE_TYPES
from tallygate.kit import config_version
from tallygate.kit.clock import from_epoch_us, to_epoch_us
from tallygate.kit.money import parse_amount, to_decimal_string
from tallygate.ledger.key_spend import utc_day
from tallygate.ledger.tx import from_connection

KEY_PREFIX = "tg-"
VISIBLE_CHARS = 10
BUCKETS = ("credit", "routed")


class InvalidScope(BadRequest):
    code = "invalid_scope"


class InvalidLimit(BadRequest):
    code = "invalid_limit"


class KeyNotFound(NotFound):
    code = "key_not_found"


def generate_key() -> str:
    """``tg-`` + 40 URL-safe characters (240 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(30)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# ---- validation -------------------------------------------------------------------------------


def check_globs(globs: Sequence[str]) -> list[str]:
    if len(globs) > MAX_GLOBS:
        raise InvalidScope(f"at most {MAX_GLOBS} model patterns per key", param="allowed_models")
    cleaned = []
    for glob in globs:
        pattern = glob.strip()
        if not pattern or len(pattern) > MAX_GLOB_LENGTH or not GLOB_RE.match(pattern):
            raise InvalidScope(
                f"invalid model pattern {glob!r}: use model names with the glob characters "
                "* ? [ ] (letters, digits and . _ / - only; no ':', which is reserved for the "
                "route suffix of the API model id)",
                param="allowed_models",
            )
        if pattern not in cleaned:
            cleaned.append(pattern)
    return cleaned


def check_route_types(route_types: Sequence[str], default: str | None) -> tuple[list[str], str]:
    allowed = [r for r in ROUTE_TYPES if r in route_types]
    if not allowed:
        raise InvalidScope(
            "allowed_route_types must name at least one of: official, routed",
            param="allowed_route_types",
        )
    if default is None:
        default = "routed" if "routed" in allowed else allowed[0]
    if default not in allowed:
        raise InvalidScope(
            f"default_route_type {default!r} is not among the allowed route types "
            f"({', '.join(allowed)})",
            param="default_route_type",
        )
    return allowed, default


def check_rate(value: int | None, field: str) -> int | None:
    if value is not None and value < 1:
        raise InvalidLimit(f"{field} must be at least 1, or null for no limit", param=field)
    return value


def check_expiry(expires_at: dt.datetime | None, now_us: int) -> int | None:
    if expires_at is None:
        return None
    when = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=dt.UTC)
    us = to_epoch_us(when)
    if us <= now_us:
        raise InvalidLimit("expires_at must be in the future", param="expires_at")
    return us


def parse_limit(text: str | None, field: str) -> int | None:
    if text is None:
        return None
    nanos = parse_amount(text.strip(), field=field)
    if nanos < 0:
        raise InvalidLimit(f"{field} must not be negative", param=field)
    return nanos


def limits_of(bucket: str, given: SpendLimitIn, current: Mapping[Any, Any]) -> tuple[Any, Any]:
    """(total, daily) nanos for ``bucket``: given fields replace, omitted ones keep ``current``."""
    fields = given.model_fields_set
    total = (
        parse_limit(given.total, f"spend_limits.{bucket}.total")
        if "total" in fields
        else current.get("limit_total_nanos")
    )
    daily = (
        parse_limit(given.daily, f"spend_limits.{bucket}.daily")
        if "daily" in fields
        else current.get("limit_daily_nanos")
    )
    return total, daily


# ---- views ------------------------------------------------------------------------------------


def _opt_decimal(nanos: int | None) -> str | None:
    return None if nanos is None else to_decimal_string(nanos)


def _spend(m: Mapping[Any, Any], currency: str, today: int) -> BucketSpend:
    on_today = int(m["day"]) == today
    today_spent = int(m["day_spent_nanos"]) if on_today else 0
    total, daily = m["limit_total_nanos"], m["limit_daily_nanos"]
    spent, reserved = int(m["total_spent_nanos"]), int(m["total_reserved_nanos"])
    return BucketSpend(
        bucket=m["bucket"],
        currency=currency,
        limit_total_nanos=total,
        limit_total=_opt_decimal(total),
        limit_daily_nanos=daily,
        limit_daily=_opt_decimal(daily),
        total_spent_nanos=spent,
        total_spent=to_decimal_string(spent),
        today_spent_nanos=today_spent,
        today_spent=to_decimal_string(today_spent),
        reserved_nanos=reserved,
        reserved=to_decimal_string(reserved),
    )


def _status(m: Mapping[Any, Any], now_us: int) -> str:
    if m["revoked_at"] is not None:
        return "revoked"
    if m["expires_at"] is not None and int(m["expires_at"]) <= now_us:
        return "expired"
    return "active"


def _opt_time(us: int | None) -> dt.datetime | None:
    return None if us is None else from_epoch_us(int(us))


def _views(
    conn: Connection, rows: Sequence[RowMapping], currencies: Mapping[str, str], now_us: int
) -> list[KeyOut]:
    today = utc_day(now_us)
    spend: dict[int, list[BucketSpend]] = {}
    for s in repo.spend_rows(conn, [int(r["id"]) for r in rows]):
        spend.setdefault(int(s["key_id"]), []).append(
            _spend(s, currencies[str(s["bucket"])], today)
        )
    return [
        KeyOut(
            id=int(m["id"]),
            user_id=int(m["user_id"]),
            prefix=str(m["prefix"]),
            label=str(m["label"]),
            project=str(m["project"]),
            allowed_models=orjson.loads(m["allowed_models"]),
            allowed_route_types=orjson.loads(m["allowed_route_types"]),
            default_route_type=m["default_route_type"],
            rpm_limit=m["rpm_limit"],
            tpm_limit=m["tpm_limit"],
            expires_at=_opt_time(m["expires_at"]),
            revoked_at=_opt_time(m["revoked_at"]),
            created_at=from_epoch_us(int(m["created_at"])),
            status=_status(m, now_us),  # type: ignore[arg-type]
            spend=spend.get(int(m["id"]), []),
        )
        for m in rows
    ]


def _row(conn: Connection, key_id: int, user_id: int | None) -> RowMapping:
    """The key; 404 when unknown or (for ``user_id``) someone else's — the same answer."""
    row = repo.key_by_id(conn, key_id)
    if row is None or (user_id is not None and int(row["user_id"]) != user_id):
        raise KeyNotFound(f"no API key with id {key_id}")
    return row


# ---- operations -------------------------------------------------------------------------------


def create_key(
    conn: Connection,
    *,
    user_id: int,
    body: KeyCreate,
    currencies: Mapping[str, str],
    now_us: int,
) -> KeyCreated:
    label = body.label.strip()
    if not label:
        raise BadRequest("label must not be empty", param="label")
    globs = check_globs(body.allowed_models)
    route_types, default = check_route_types(body.allowed_route_types, body.default_route_type)
    given_limits: dict[str, SpendLimitIn] = {str(b): v for b, v in body.spend_limits.items()}
    limits = {b: limits_of(b, given_limits.get(b, SpendLimitIn()), {}) for b in BUCKETS}
    key = generate_key()
    key_id = repo.insert_key(
        conn,
        user_id=user_id,
        prefix=key[:VISIBLE_CHARS],
        key_hash=key_hash(key),
        label=label,
        project=body.project.strip(),
        allowed_models=orjson.dumps(globs).decode(),
        allowed_route_types=orjson.dumps(route_types).decode(),
        default_route_type=default,
        rpm_limit=check_rate(body.rpm_limit, "rpm_limit"),
        tpm_limit=check_rate(body.tpm_limit, "tpm_limit"),
        expires_at=check_expiry(body.expires_at, now_us),
        created_at=now_us,
    )
    for bucket, (total, daily) in limits.items():
        repo.insert_spend(conn, key_id=key_id, bucket=bucket, limit_total=total, limit_daily=daily)
    config_version.bump(from_connection(conn), now_us)
    view = get_key(conn, key_id, user_id=user_id, currencies=currencies, now_us=now_us)
    return KeyCreated(**view.model_dump(), key=key)


def get_key(
    conn: Connection,
    key_id: int,
    *,
    user_id: int | None,
    currencies: Mapping[str, str],
    now_us: int,
) -> KeyOut:
    """``user_id`` limits the lookup to that user's keys (None: operators, any key)."""
    return _views(conn, [_row(conn, key_id, user_id)], currencies, now_us)[0]


def list_keys(
    conn: Connection,
    *,
    user_id: int | None,
    currencies: Mapping[str, str],
    now_us: int,
    cursor: int | None = None,
    limit: int = 100,
) -> KeyList:
    rows = repo.list_keys(conn, user_id=user_id, after_id=cursor, limit=limit + 1)
    items = _views(conn, rows[:limit], currencies, now_us)
    more = len(rows) > limit
    return KeyList(items=items, next_cursor=str(items[-1].id) if more else None)


def _changed_columns(body: KeyUpdate, row: Mapping[Any, Any], now_us: int) -> dict[str, Any]:
    """The api_keys columns a PATCH sets, validated; fields left out of the body are kept."""
    given = body.model_fields_set
    values: dict[str, Any] = {}
    if "label" in given:
        label = (body.label or "").strip()
        if not label:
            raise BadRequest("label must not be empty", param="label")
        values["label"] = label
    if "project" in given:
        values["project"] = (body.project or "").strip()
    if "allowed_models" in given:
        values["allowed_models"] = orjson.dumps(check_globs(body.allowed_models or [])).decode()
    if given & {"allowed_route_types", "default_route_type"}:
        route_types: list[str] = (
            list(body.allowed_route_types or [])
            if "allowed_route_types" in given
            else orjson.loads(row["allowed_route_types"])
        )
        # Without an explicit default, keep the current one while it stays allowed.
        default: str | None = body.default_route_type if "default_route_type" in given else None
        if default is None and str(row["default_route_type"]) in route_types:
            default = str(row["default_route_type"])
        allowed, default = check_route_types(route_types, default)
        values["allowed_route_types"] = orjson.dumps(allowed).decode()
        values["default_route_type"] = default
    for field in ("rpm_limit", "tpm_limit"):
        if field in given:
            values[field] = check_rate(getattr(body, field), field)
    if "expires_at" in given:
        values["expires_at"] = check_expiry(body.expires_at, now_us)
    return values


def update_key(
    conn: Connection,
    key_id: int,
    *,
    user_id: int,
    body: KeyUpdate,
    currencies: Mapping[str, str],
    now_us: int,
) -> KeyOut:
    """Validate everything first, then write: an invalid PATCH changes nothing."""
    values = _changed_columns(body, _row(conn, key_id, user_id), now_us)
    limits = {}
    if body.spend_limits:
        current: dict[str, Mapping[Any, Any]] = {
            str(s["bucket"]): s for s in repo.spend_rows(conn, [key_id])
        }
        limits = {
            b: limits_of(b, given_limits, current.get(b, {}))
            for b, given_limits in body.spend_limits.items()
        }
    repo.update_key(conn, key_id, values)
    for bucket, (total, daily) in limits.items():
        repo.set_spend_limits(
            conn, key_id=key_id, bucket=bucket, limit_total=total, limit_daily=daily
        )
    if values or limits:
        config_version.bump(from_connection(conn), now_us)
    return get_key(conn, key_id, user_id=user_id, currencies=currencies, now_us=now_us)


def revoke_key(
    conn: Connection,
    key_id: int,
    *,
    user_id: int | None,
    currencies: Mapping[str, str],
    now_us: int,
    operator: str | None = None,
    reason: str = "",
) -> KeyOut:
    """Revoke (idempotent: a second revoke keeps the first time). ``operator`` (their email)
    marks an operator's revocation, which is audited; ``user_id`` limits it to the owner."""
    row = _row(conn, key_id, user_id)
    if repo.revoke(conn, key_id, now_us):
        tx = from_connection(conn)
        config_version.bump(tx, now_us)
        if operator is not None:
            audit.record(
                tx,
                now_us=now_us,
                actor=operator,
                source="operator",
                action="key.revoke",
                target=f"key:{key_id}",
                before={"user_id": int(row["user_id"]), "prefix": row["prefix"], "revoked": False},
                after={"user_id": int(row["user_id"]), "prefix": row["prefix"], "revoked": True},
                reason=reason,
            )
    return get_key(conn, key_id, user_id=user_id, currencies=currencies, now_us=now_us)
