"""Top-up orders: quote, create, move through their states, and credit exactly once.

States (DESIGN.md "top-up order"): ``pending`` → ``paid`` / ``expired`` / ``canceled`` /
``failed``, or → ``processing`` (ended only by the provider) → ``paid`` / ``failed``; manual
transfers ``pending`` → ``awaiting_review`` → ``paid`` / ``rejected`` / ``expired``. Only
``mark_paid`` creates balance, under the key ``topup:<provider>:<payment id>``. A payment the
provider confirms after the order expired, was canceled or failed is still credited (the money
was taken) and the order says so. Functions take the request's connection and never commit."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping

from tallygate.config import Settings
from tallygate.errors import BadRequest, Conflict, NotFound
from tallygate.kit.money import parse_amount, to_decimal_string
from tallygate.ledger import Ledger
from tallygate.payments import currency as cur
from tallygate.payments import repository as repo

PROVIDERS = ("sandbox", "stripe", "wechat", "bank")
CLOSED = ("paid", "expired", "canceled", "failed", "rejected")
MOVES: dict[str, tuple[str, ...]] = {
    "pending": ("processing", "expired", "canceled", "failed", "awaiting_review"),
    "processing": ("failed",),
    "awaiting_review": ("rejected", "expired"),
}
"""Allowed non-paying moves; ``paid`` is reached only through ``mark_paid``."""


class OrderNotFound(NotFound):
    code = "order_not_found"


class InvalidTopUp(BadRequest):
    code = "invalid_topup"


class ProviderDisabled(BadRequest):
    code = "provider_disabled"


class OrderStateConflict(Conflict):
    code = "order_state_conflict"


@dataclass(frozen=True, slots=True)
class Quote:
    currency: str
    amount_minor: int
    rate: str
    bonus_rate: str
    quoted_nanos: int


def rates_for(settings: Settings, bucket: str, bucket_currency: str) -> dict[str, str]:
    configured = settings.topup_rates.get(bucket)
    if configured:
        return {c.upper(): str(r) for c, r in configured.items()}
    return {bucket_currency.upper(): "1"}


def bonus_for(settings: Settings, bucket: str, base_nanos: int) -> str:
    """The bonus fraction of the highest tier whose minimum (bucket units) is reached."""
    best, best_min = "0", -1
    for minimum, bonus in settings.topup_bonus_tiers.get(bucket, []):
        floor = parse_amount(minimum, field="topup_bonus_tiers")
        if base_nanos >= floor > best_min:
            best, best_min = str(bonus), floor
    return best


def quote(
    settings: Settings, bucket: str, bucket_currency: str, amount: str, currency: str | None
) -> Quote:
    payment_currency = (currency or bucket_currency).upper()
    rates = rates_for(settings, bucket, bucket_currency)
    if payment_currency not in rates:
        raise InvalidTopUp(
            f"the {bucket} bucket cannot be topped up in {payment_currency}; "
            f"accepted: {', '.join(sorted(rates))}",
            param="currency",
        )
    minor = cur.to_minor(amount, payment_currency)
    low = cur.to_minor(settings.topup_min, payment_currency, field="topup_min")
    high = cur.to_minor(settings.topup_max, payment_currency, field="topup_max")
    if not low <= minor <= high:
        raise InvalidTopUp(
            f"a top-up must be between {settings.topup_min} and {settings.topup_max} "
            f"{payment_currency}",
            param="amount",
        )
    rate = rates[payment_currency]
    base = cur.to_nanos(minor, payment_currency, cur.parse_rate(rate))
    bonus = bonus_for(settings, bucket, base)
    quoted = cur.to_nanos(minor, payment_currency, cur.factor(rate, bonus))
    if quoted <= 0:
        raise InvalidTopUp("this amount would credit nothing at the current rate", param="amount")
    return Quote(payment_currency, minor, rate, bonus, quoted)


def order_factor(order: Mapping[Any, Any]) -> Fraction:
    return cur.factor(str(order["rate"]), str(order["bonus_rate"]))


def new_public_id(prefix: str = "ord") -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def create(
    conn: Connection,
    *,
    settings: Settings,
    currencies: Mapping[str, str],
    user_id: int,
    bucket: str,
    provider: str,
    amount: str,
    currency: str | None,
    now_us: int,
) -> RowMapping:
    q = quote(settings, bucket, currencies[bucket], amount, currency)
    ttl_us = (
        settings.bank_review_days * 86_400 if provider == "bank" else settings.order_ttl_seconds
    ) * 1_000_000
    public_id = new_public_id()
    order_id = repo.insert_order(
        conn,
        public_id=public_id,
        user_id=user_id,
        bucket=bucket,
        bucket_currency=currencies[bucket],
        provider=provider,
        test_mode=1 if provider == "sandbox" else 0,
        status="pending",
        currency=q.currency,
        amount_minor=q.amount_minor,
        rate=q.rate,
        bonus_rate=q.bonus_rate,
        quoted_nanos=q.quoted_nanos,
        expires_at=now_us + ttl_us,
        created_at=now_us,
        updated_at=now_us,
    )
    repo.add_event(conn, order_id, at=now_us, from_status=None, to_status="pending", source="user")
    return repo.lock_order(conn, order_id)


def get(conn: Connection, public_id: str, *, user_id: int | None = None) -> RowMapping:
    order = repo.order_by_public_id(conn, public_id)
    if order is None or (user_id is not None and int(order["user_id"]) != user_id):
        raise OrderNotFound(f"no top-up order {public_id}")
    return order


def move(
    conn: Connection,
    order_id: int,
    to: str,
    *,
    source: str,
    now_us: int,
    detail: str = "",
    strict: bool = False,
    **values: Any,
) -> RowMapping:
    """Move the (locked) order to ``to`` if its state allows; a stale or repeated event is a
    no-op (or ``OrderStateConflict`` when ``strict``, for user and operator actions)."""
    order = repo.lock_order(conn, order_id)
    if order["status"] == to or to not in MOVES.get(str(order["status"]), ()):
        if strict and order["status"] != to:
            raise OrderStateConflict(
                f"order {order['public_id']} is {order['status']}; it cannot become {to}",
                details={"status": order["status"]},
            )
        return order
    repo.update_order(conn, order_id, status=to, status_reason=detail, updated_at=now_us, **values)
    repo.add_event(
        conn,
        order_id,
        at=now_us,
        from_status=str(order["status"]),
        to_status=to,
        source=source,
        detail=detail,
    )
    return repo.lock_order(conn, order_id)


def flag(
    conn: Connection,
    order: Mapping[Any, Any],
    name: str,
    detail: dict[str, Any],
    *,
    source: str,
    now_us: int,
) -> None:
    text = orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode()
    if order["flag"] == name and order["flag_detail"] == text:
        return
    repo.update_order(conn, int(order["id"]), flag=name, flag_detail=text, updated_at=now_us)
    repo.add_event(
        conn,
        int(order["id"]),
        at=now_us,
        from_status=str(order["status"]),
        to_status=str(order["status"]),
        source=source,
        detail=f"flagged {name}: {text}",
    )


def mark_paid(
    conn: Connection,
    ledger: Ledger,
    order_id: int,
    *,
    paid_minor: int,
    paid_currency: str,
    payment_id: str,
    source: str,
    now_us: int,
    override: bool = False,
) -> RowMapping:
    """The provider says the money arrived: credit the bucket once (paying debt first).

    A figure that disagrees with the order credits nothing and flags the order with both
    (unless an operator overrides, crediting what was actually paid)."""
    order = repo.lock_order(conn, order_id)
    if order["status"] == "paid":
        return order
    paid_currency = paid_currency.upper()
    expected = (int(order["amount_minor"]), str(order["currency"]))
    if (paid_minor, paid_currency) != expected and not override:
        flag(
            conn,
            order,
            "amount_mismatch",
            {
                "expected": f"{cur.minor_to_text(expected[0], expected[1])} {expected[1]}",
                "reported": f"{cur.minor_to_text(paid_minor, paid_currency)} {paid_currency}",
                "expected_minor": expected[0],
                "reported_minor": paid_minor,
                "reported_currency": paid_currency,
                "payment_id": payment_id,
            },
            source=source,
            now_us=now_us,
        )
        return repo.lock_order(conn, order_id)
    if paid_currency != expected[1]:
        raise InvalidTopUp("an override cannot change the currency", param="currency")
    credited = cur.to_nanos(paid_minor, paid_currency, order_factor(order))
    provider = str(order["provider"])
    tx = ledger.tx(conn)
    posted = ledger.credit(
        tx,
        user_id=int(order["user_id"]),
        bucket=str(order["bucket"]),
        amount_nanos=credited,
        kind="topup",
        source=f"clearing:{provider}",
        idempotency_key=f"topup:{provider}:{payment_id}",
        lot_kind="paid",
        cause_type="order",
        cause_id=str(order["public_id"]),
        memo=f"{'test-mode ' if order['test_mode'] else ''}top-up {order['public_id']} "
        f"via {provider}",
    )
    late = order["status"] in ("expired", "canceled", "failed")
    detail = f"paid {cur.minor_to_text(paid_minor, paid_currency)} {paid_currency}; credited "
    detail += f"{to_decimal_string(credited)} {order['bucket_currency']}"
    if posted.extra.get("debt_repaid_nanos"):
        detail += f" (repaid debt {to_decimal_string(posted.extra['debt_repaid_nanos'])})"
    if late:
        detail += f"; payment arrived after the order was {order['status']}"
    repo.update_order(
        conn,
        order_id,
        status="paid",
        paid_minor=paid_minor,
        paid_currency=paid_currency,
        credited_nanos=credited,
        entry_id=posted.entry_id,
        lot_id=posted.extra.get("lot_id"),
        provider_payment_id=payment_id,
        paid_at=now_us,
        paid_after_expiry=1 if late else 0,
        status_reason=detail,
        updated_at=now_us,
    )
    repo.add_event(
        conn,
        order_id,
        at=now_us,
        from_status=str(order["status"]),
        to_status="paid",
        source=source,
        detail=detail,
    )
    return repo.lock_order(conn, order_id)


def expire_due(conn: Connection, now_us: int, limit: int = 200) -> int:
    """Expire pending (and awaiting-review) orders past their lifetime; never processing, and
    never an order whose payment arrived with the wrong amount (the money was taken: it waits
    for an operator, and "expired" would tell the user nothing was charged)."""
    done = 0
    for order_id in repo.due_orders(conn, now_us, limit):
        order = repo.lock_order(conn, order_id)
        if (
            order["status"] in ("pending", "awaiting_review")
            and order["expires_at"] <= now_us
            and order["flag"] != "amount_mismatch"
        ):
            move(
                conn,
                order_id,
                "expired",
                source="sweeper",
                now_us=now_us,
                detail="no payment before the order's lifetime ended",
            )
            done += 1
    return done
