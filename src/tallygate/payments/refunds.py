"""Refunds of paid top-ups: one record and one debit per refund, whatever announces it.

A refund record is created by an operator (before the provider is called: its key is the
provider's Idempotency-Key and the debit's key), by a provider event (keyed by the provider's
refund id), or manually. ``book`` takes the money back under the operator's shortfall policy:
``debt`` lets the ledger book what the bucket cannot cover as debt; ``review`` takes what is
there and leaves the rest ``awaiting_decision``. A refund that fails after it was booked is
re-credited once (``refund_failed:<key>``). Σ refunds of an order never exceed what was paid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping

from tallygate.audit import service as audit
from tallygate.errors import BadRequest, Conflict, NotFound
from tallygate.kit.money import to_decimal_string
from tallygate.ledger import Ledger
from tallygate.payments import currency as cur
from tallygate.payments import repository as repo
from tallygate.payments.orders import new_public_id, order_factor

BOOKED_STATES = ("pending", "requires_action", "succeeded")
UNDONE_STATES = ("failed", "canceled")
POLICIES = ("debt", "review")


class RefundNotAllowed(Conflict):
    code = "refund_not_allowed"


class RefundNotFound(NotFound):
    code = "refund_not_found"


def refundable_minor(conn: Connection, order: Mapping[Any, Any]) -> int:
    """What may still be refunded: paid minus every refund not failed or canceled."""
    taken = sum(
        int(r["amount_minor"])
        for r in repo.refunds_of(conn, int(order["id"]))
        if r["status"] not in UNDONE_STATES
    )
    return int(order["paid_minor"] or 0) - taken


def create_record(
    conn: Connection,
    order: Mapping[Any, Any],
    *,
    amount_minor: int,
    idempotency_key: str,
    source: str,
    status: str,
    now_us: int,
    provider_refund_id: str | None = None,
    actor: str = "",
    reason: str = "",
) -> RowMapping:
    if amount_minor <= 0:
        raise BadRequest("a refund amount must be positive", param="amount")
    nanos = cur.to_nanos(amount_minor, str(order["currency"]), order_factor(order))
    refund_id = repo.insert_refund(
        conn,
        public_id=new_public_id("rf"),
        order_id=int(order["id"]),
        provider=str(order["provider"]),
        provider_refund_id=provider_refund_id,
        idempotency_key=idempotency_key,
        source=source,
        actor=actor,
        reason=reason,
        status=status,
        currency=str(order["currency"]),
        amount_minor=amount_minor,
        amount_nanos=nanos,
        first_seen_at=now_us,
        updated_at=now_us,
    )
    found = repo.refund_by(conn, id=refund_id)
    assert found is not None
    return found


def set_status(
    conn: Connection,
    ledger: Ledger,
    refund: Mapping[Any, Any],
    status: str,
    *,
    policy: str,
    source: str,
    now_us: int,
) -> RowMapping:
    """Bring the refund to the provider's status and the ledger to match (order locked)."""
    refund_id = int(refund["id"])
    if refund["status"] != status:
        repo.update_refund(conn, refund_id, status=status, updated_at=now_us)
    current = repo.refund_by(conn, id=refund_id)
    assert current is not None
    if status in BOOKABLE and current["booked_at"] is None:
        book(conn, ledger, current, policy=policy, source=source, now_us=now_us)
    elif status in UNDONE_STATES and current["booked_at"] is not None:
        recredit(conn, ledger, current, source=source, now_us=now_us)
    found = repo.refund_by(conn, id=refund_id)
    assert found is not None
    return found


BOOKABLE = BOOKED_STATES


def _refund_state(paid_minor: int, refunded_minor: int) -> str:
    if refunded_minor <= 0:
        return "none"
    return "full" if refunded_minor >= paid_minor else "partial"


def book(
    conn: Connection,
    ledger: Ledger,
    refund: Mapping[Any, Any],
    *,
    policy: str,
    source: str,
    now_us: int,
) -> None:
    order = repo.lock_order(conn, int(refund["order_id"]))
    paid = int(order["paid_minor"] or 0)
    refunded = int(order["refunded_minor"])
    if refunded + int(refund["amount_minor"]) > paid:
        detail = {
            "refund": refund["public_id"],
            "paid_minor": paid,
            "refunded_minor": refunded,
            "amount_minor": int(refund["amount_minor"]),
        }
        from tallygate.payments.orders import flag

        flag(conn, order, "refund_exceeds_paid", detail, source=source, now_us=now_us)
        return
    user_id, bucket = int(order["user_id"]), str(order["bucket"])
    tx = ledger.tx(conn)
    used: int | None = None
    receipts: list[str] = []
    if order["lot_id"] is not None:
        _, _, used, receipts = repo.lot_usage(conn, int(order["lot_id"]))
    amount = int(refund["amount_nanos"])
    if policy == "review":
        bal = ledger.balance(tx, user_id, bucket)
        amount = min(amount, max(bal.available_nanos, 0))
    taken = debt = 0
    entry_id = None
    if amount > 0:
        posted = ledger.reverse(
            tx,
            user_id=user_id,
            bucket=bucket,
            amount_nanos=amount,
            kind="refund",
            destination=f"clearing:{order['provider']}",
            idempotency_key=str(refund["idempotency_key"]),
            lot_id=order["lot_id"],
            cause_type="refund",
            cause_id=str(refund["public_id"]),
            memo=f"refund of top-up {order['public_id']}",
        )
        entry_id = posted.entry_id
        taken, debt = int(posted.extra["taken_nanos"]), int(posted.extra["debt_booked_nanos"])
    shortfall = int(refund["amount_nanos"]) - taken - debt
    state = "debt" if debt else ("awaiting_decision" if shortfall else "none")
    after = ledger.balance(tx, user_id, bucket).balance_nanos
    repo.update_refund(
        conn,
        int(refund["id"]),
        entry_id=entry_id,
        taken_nanos=taken,
        debt_nanos=debt,
        shortfall_nanos=shortfall,
        shortfall_state=state,
        credit_used_nanos=used,
        receipts_json=orjson.dumps(receipts).decode(),
        balance_after_nanos=after,
        booked_at=now_us,
        updated_at=now_us,
    )
    refunded += int(refund["amount_minor"])
    _set_refunded(
        conn,
        order,
        refunded,
        now_us=now_us,
        source=source,
        detail=f"refund {refund['public_id']} of "
        f"{cur.minor_to_text(int(refund['amount_minor']), str(refund['currency']))} "
        f"{refund['currency']} booked: took {to_decimal_string(taken)}, debt "
        f"{to_decimal_string(debt)}, awaiting decision {to_decimal_string(shortfall)}",
    )


def _set_refunded(
    conn: Connection,
    order: Mapping[Any, Any],
    refunded: int,
    *,
    now_us: int,
    source: str,
    detail: str,
) -> None:
    repo.update_order(
        conn,
        int(order["id"]),
        refunded_minor=refunded,
        refund_state=_refund_state(int(order["paid_minor"] or 0), refunded),
        updated_at=now_us,
    )
    repo.add_event(
        conn,
        int(order["id"]),
        at=now_us,
        from_status=str(order["status"]),
        to_status=str(order["status"]),
        source=source,
        detail=detail,
    )


def recredit(
    conn: Connection, ledger: Ledger, refund: Mapping[Any, Any], *, source: str, now_us: int
) -> None:
    """The provider reports a booked refund failed: give back exactly what it took (the
    credit repays the debt it booked first), once."""
    if refund["recredit_entry_id"] is not None:
        return
    order = repo.lock_order(conn, int(refund["order_id"]))
    amount = int(refund["taken_nanos"]) + int(refund["debt_nanos"])
    if refund["shortfall_state"] == "debt" and refund["shortfall_entry_id"] is not None:
        amount += int(refund["shortfall_nanos"])
    entry_id = None
    if amount > 0:
        posted = ledger.credit(
            ledger.tx(conn),
            user_id=int(order["user_id"]),
            bucket=str(order["bucket"]),
            amount_nanos=amount,
            kind="refund_failed",
            source=f"clearing:{order['provider']}",
            idempotency_key=f"refund_failed:{refund['idempotency_key']}",
            lot_kind="paid",
            cause_type="refund",
            cause_id=str(refund["public_id"]),
            memo=f"refund {refund['public_id']} failed at the provider: re-credited",
        )
        entry_id = posted.entry_id
    values: dict[str, Any] = {"recredit_entry_id": entry_id, "updated_at": now_us}
    if refund["shortfall_state"] == "awaiting_decision":
        values["shortfall_state"] = "canceled"
    repo.update_refund(conn, int(refund["id"]), **values)
    if entry_id is None:
        # Nothing was taken: mark it handled with a sentinel-free second update of booked_at.
        repo.update_refund(conn, int(refund["id"]), booked_at=None)
    _set_refunded(
        conn,
        order,
        int(order["refunded_minor"]) - int(refund["amount_minor"]),
        now_us=now_us,
        source=source,
        detail=f"refund {refund['public_id']} failed; re-credited {to_decimal_string(amount)}",
    )


def decide_shortfall(
    conn: Connection,
    ledger: Ledger,
    refund_public_id: str,
    *,
    decision: str,
    reason: str,
    operator: str,
    now_us: int,
) -> RowMapping:
    """An operator settles a ``review`` shortfall: book it as debt, or write it off."""
    refund = repo.refund_by(conn, public_id=refund_public_id)
    if refund is None:
        raise RefundNotFound(f"no refund {refund_public_id}")
    order = repo.lock_order(conn, int(refund["order_id"]))
    refund = repo.refund_by(conn, id=int(refund["id"]))
    assert refund is not None
    if refund["shortfall_state"] != "awaiting_decision":
        raise RefundNotAllowed(
            f"refund {refund_public_id} has no shortfall awaiting a decision "
            f"({refund['shortfall_state']})"
        )
    values: dict[str, Any] = {"decision_reason": reason, "updated_at": now_us}
    if decision == "debt":
        posted = ledger.reverse(
            ledger.tx(conn),
            user_id=int(order["user_id"]),
            bucket=str(order["bucket"]),
            amount_nanos=int(refund["shortfall_nanos"]),
            kind="refund",
            destination=f"clearing:{order['provider']}",
            idempotency_key=f"{refund['idempotency_key']}:shortfall",
            cause_type="refund",
            cause_id=str(refund["public_id"]),
            memo=f"shortfall of refund {refund['public_id']} booked by {operator}",
        )
        values |= {"shortfall_state": "debt", "shortfall_entry_id": posted.entry_id}
    else:
        values["shortfall_state"] = "written_off"
    repo.update_refund(conn, int(refund["id"]), **values)
    audit.record(
        ledger.tx(conn),
        now_us=now_us,
        actor=operator,
        source="operator",
        action=f"refund.shortfall.{decision}",
        target=f"refund:{refund_public_id}",
        before={"shortfall_state": "awaiting_decision"},
        after={
            "shortfall_state": values["shortfall_state"],
            "shortfall_nanos": int(refund["shortfall_nanos"]),
        },
        reason=reason,
    )
    found = repo.refund_by(conn, id=int(refund["id"]))
    assert found is not None
    return found
