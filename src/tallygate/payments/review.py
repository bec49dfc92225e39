"""Operator decisions on orders: approve or reject a manual bank transfer, and override an
amount mismatch. Each writes an audit event with its reason in the same transaction."""

from __future__ import annotations

import orjson
from sqlalchemy import Connection, RowMapping

from tallygate.audit import service as audit
from tallygate.errors import Conflict
from tallygate.kit.money import parse_amount
from tallygate.ledger import Ledger
from tallygate.payments import currency as cur
from tallygate.payments import orders
from tallygate.payments import repository as repo


class AmountMismatch(Conflict):
    code = "amount_mismatch"


class SecondReviewerRequired(Conflict):
    code = "second_reviewer_required"


class ApprovalMismatch(Conflict):
    code = "approval_mismatch"


def needs_second_review(order: RowMapping, seen: int, currency: str, above: str) -> bool:
    """Four eyes: does crediting ``seen`` exceed the operator-set threshold (bucket units)?
    A statement in another currency than the order's cannot be converted: it always does."""
    if not above:
        return False
    if currency.upper() != str(order["currency"]):
        return True
    credit = cur.to_nanos(seen, currency.upper(), orders.order_factor(order))
    return credit > parse_amount(above, field="bank_second_review_above")


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
    second_review_above: str = "",
) -> RowMapping:
    """Credit a bank transfer with the amount seen on the statement. Above the four-eyes
    threshold the first approval is only recorded; a second, different operator who sees the
    same amount credits it."""
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
    first: dict[str, object] | None = None
    if needs_second_review(order, seen, currency, second_review_above):
        if order["first_approval_json"] is None:
            return _first_approval(
                conn, ledger, order, seen, currency, reason, override, operator, now_us
            )
        first = orjson.loads(order["first_approval_json"])
        assert first is not None
        if first["operator"] == operator:
            raise SecondReviewerRequired(
                f"order {public_id} was approved by {operator}; above "
                f"{second_review_above} {order['bucket_currency']} a second, different "
                "operator must approve it"
            )
        if (first["amount_minor"], first["currency"]) != (seen, currency.upper()):
            raise ApprovalMismatch(
                f"the first approval saw {cur.minor_to_text(int(str(first['amount_minor'])), str(first['currency']))} "
                f"{first['currency']} on the statement, this one {amount} {currency.upper()}: "
                "reject the order or approve the same amount",
                details={"first_minor": first["amount_minor"], "seen_minor": seen},
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
            "first_approver": None if first is None else first["operator"],
        },
    )
    return paid


def _first_approval(
    conn: Connection,
    ledger: Ledger,
    order: RowMapping,
    seen: int,
    currency: str,
    reason: str,
    override: bool,
    operator: str,
    now_us: int,
) -> RowMapping:
    record = {
        "operator": operator,
        "amount_minor": seen,
        "currency": currency.upper(),
        "override": override,
        "reason": reason,
        "at": now_us,
    }
    repo.update_order(
        conn, int(order["id"]), first_approval_json=orjson.dumps(record).decode(), updated_at=now_us
    )
    repo.add_event(
        conn,
        int(order["id"]),
        at=now_us,
        from_status=str(order["status"]),
        to_status=str(order["status"]),
        source="operator",
        detail=f"approved by {operator} ({cur.minor_to_text(seen, currency.upper())} "
        f"{currency.upper()} on the statement); above the four-eyes threshold a second, "
        "different operator must approve",
    )
    _audit(
        conn,
        ledger,
        order,
        action="order.approve.first",
        operator=operator,
        reason=reason,
        now_us=now_us,
        before={"status": order["status"]},
        after={"status": order["status"], "seen_minor": seen, "currency": currency.upper()},
    )
    return repo.lock_order(conn, int(order["id"]))


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
