"""Operator decisions on orders: approve or reject a manual bank transfer, and override an
amount mismatch. Each writes an audit event with its reason in the same transaction."""

from __future__ import annotations

import orjson
from sqlalchemy import Connection, RowMapping

from tallygate.audit import service as audit
from tallygate.errors import Conflict
from tallygate.ledger import Ledger
from tallygate.payments import currency as cur
from tallygate.payments import orders
from tallygate.payments import repository as repo


class AmountMismatch(Conflict):
    code = "amount_mismatch"


def _audit(
    conn: Connection,
    ledger: Ledger,
    order: RowMapping,
    *,
    action: str,
    operator: str,
    reason: str,
    now_us: int,
    before: dict[str, object],
    after: dict[str, object],
) -> None:
    audit.record(
        ledger.tx(conn),
        now_us=now_us,
        actor=operator,
        source="operator",
        action=action,
        target=f"order:{order['public_id']}",
        before=before,
        after=after,
        reason=reason,
    )


def approve(
    conn: Connection,
    ledger: Ledger,
    public_id: str,
    *,
    amount: str,
    currency: str,
    reason: str,
    override: bool,
    operator: str,
    now_us: int,
) -> RowMapping:
    """Credit a bank transfer with the amount seen on the statement."""
    order = repo.lock_order(conn, int(orders.get(conn, public_id)["id"]))
    if order["provider"] != "bank" or order["status"] != "awaiting_review":
        raise orders.OrderStateConflict(
            f"order {public_id} is not a bank transfer awaiting review ({order['status']})"
        )
    seen = cur.to_minor(amount, currency)
    expected = (int(order["amount_minor"]), str(order["currency"]))
    if (seen, currency.upper()) != expected and not override:
        raise AmountMismatch(
            f"the statement shows {amount} {currency.upper()} but the order is for "
            f"{cur.minor_to_text(*expected)} {expected[1]}; approve with override to credit "
            "the statement amount",
            details={"expected_minor": expected[0], "seen_minor": seen},
        )
    paid = orders.mark_paid(
        conn,
        ledger,
        int(order["id"]),
        paid_minor=seen,
        paid_currency=currency,
        payment_id=f"bank:{public_id}",
        source="operator",
        now_us=now_us,
        override=override,
    )
    _audit(
        conn,
        ledger,
        order,
        action="order.approve",
        operator=operator,
        reason=reason,
        now_us=now_us,
        before={"status": order["status"]},
        after={
            "status": paid["status"],
            "seen_minor": seen,
            "currency": currency.upper(),
            "credited_nanos": paid["credited_nanos"],
            "override": override,
        },
    )
    return paid


def reject(
    conn: Connection, ledger: Ledger, public_id: str, *, reason: str, operator: str, now_us: int
) -> RowMapping:
    order = orders.get(conn, public_id)
    moved = orders.move(
        conn,
        int(order["id"]),
        "rejected",
        source="operator",
        now_us=now_us,
        strict=True,
        detail=f"rejected by {operator}: {reason}",
    )
    _audit(
        conn,
        ledger,
        order,
        action="order.reject",
        operator=operator,
        reason=reason,
        now_us=now_us,
        before={"status": order["status"]},
        after={"status": "rejected"},
    )
    return moved


def override_mismatch(
    conn: Connection, ledger: Ledger, public_id: str, *, reason: str, operator: str, now_us: int
) -> RowMapping:
    """Credit what the provider actually reported for an order flagged ``amount_mismatch``."""
    order = repo.lock_order(conn, int(orders.get(conn, public_id)["id"]))
    if order["flag"] != "amount_mismatch" or order["status"] == "paid":
        raise orders.OrderStateConflict(f"order {public_id} has no amount mismatch to override")
    detail = orjson.loads(order["flag_detail"])
    paid = orders.mark_paid(
        conn,
        ledger,
        int(order["id"]),
        paid_minor=int(detail["reported_minor"]),
        paid_currency=str(detail["reported_currency"]),
        payment_id=str(detail["payment_id"]),
        source="operator",
        now_us=now_us,
        override=True,
    )
    _audit(
        conn,
        ledger,
        order,
        action="order.override",
        operator=operator,
        reason=reason,
        now_us=now_us,
        before={"status": order["status"], "flag": order["flag"]},
        after={"status": paid["status"], "credited_nanos": paid["credited_nanos"]},
    )
    return paid
