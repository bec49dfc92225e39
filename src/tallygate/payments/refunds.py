"""Refunds of paid top-ups: one record and one debit per refund, whatever announces it.

A refund record is created by an operator (before the provider is called: its key is the
provider's Idempotency-Key and the debit's key), by a provider event (keyed by the provider's
refund id), or manually. While the provider processes it (``requested`` / ``pending`` /
``requires_action``) the money it will take is **held** in the bucket with a ledger hold (as
much as is available then), so it cannot be spent meanwhile; the order's ``refund_state`` is
``pending``. On success ``book`` settles the hold into the refund's debit and takes any rest
under the operator's shortfall policy — what the bucket cannot cover is booked as debt either
way (new holds are refused with ``account_owes``); under ``review`` that debt waits for an
operator's decision (keep it as debt, or write it off), under ``debt`` it stands. On failure
before success the hold is released; a refund that fails after it was booked is re-credited
once (``refund_failed:<key>``). Σ refunds of an order never exceed what was paid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, RowMapping

from tallygate.audit import service as audit
from tallygate.errors import BadRequest, Conflict, NotFound
from tallygate.kit.money import to_decimal_string
from tallygate.ledger import AccountOwes, InsufficientBalance, Ledger
from tallygate.payments import currency as cur
from tallygate.payments import repository as repo
from tallygate.payments.orders import new_public_id, order_factor

IN_FLIGHT = ("requested", "pending", "requires_action")
BOOKABLE = ("succeeded",)
UNDONE_STATES = ("failed", "canceled")
POLICIES = ("debt", "review")
REFUND_HOLD_TTL_SECONDS = 90 * 86_400
"""A refund hold outlives any provider's processing time; if it ever expired, the refund's
success would still take the money (through ``reverse``)."""


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


def refund_nanos(conn: Connection, order: Mapping[Any, Any], amount_minor: int) -> int:
    """What a refund of ``amount_minor`` takes from the bucket: the order's conversion, floored —
    except that the refund which completes a full refund takes exactly what the order credited
    less what the other refunds take, so partial refunds' floors leave no nano behind."""
    others = [
        r for r in repo.refunds_of(conn, int(order["id"])) if r["status"] not in UNDONE_STATES
    ]
    credited = order["credited_nanos"]
    if credited is not None and sum(int(r["amount_minor"]) for r in others) + amount_minor == int(
        order["paid_minor"] or 0
    ):
        return int(credited) - sum(int(r["amount_nanos"]) for r in others)
    return cur.to_nanos(amount_minor, str(order["currency"]), order_factor(order))


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
    nanos = refund_nanos(conn, order, amount_minor)
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
    """Bring the refund to the provider's status and the ledger to match (order locked):
    in flight → hold; succeeded → book (settle the hold); failed/canceled → release the hold,
    or re-credit once if it was already booked."""
    refund_id = int(refund["id"])
    if refund["status"] != status:
        repo.update_refund(conn, refund_id, status=status, updated_at=now_us)
    current = repo.refund_by(conn, id=refund_id)
    assert current is not None
    if status in IN_FLIGHT and current["booked_at"] is None and current["hold_key"] is None:
        hold(conn, ledger, current, source=source, now_us=now_us)
    elif status in BOOKABLE and current["booked_at"] is None:
        book(conn, ledger, current, policy=policy, source=source, now_us=now_us)
    elif status in UNDONE_STATES and current["booked_at"] is not None:
        recredit(conn, ledger, current, source=source, now_us=now_us)
    elif status in UNDONE_STATES:
        release(conn, ledger, current, source=source, now_us=now_us)
    found = repo.refund_by(conn, id=refund_id)
    assert found is not None
    return found


def _refund_state(conn: Connection, order: Mapping[Any, Any], refunded_minor: int) -> str:
    """``pending`` while a refund of the order is in flight; else none / partial / full."""
    in_flight = any(
        r["status"] in IN_FLIGHT and r["booked_at"] is None
        for r in repo.refunds_of(conn, int(order["id"]))
    )
    if in_flight:
        return "pending"
    if refunded_minor <= 0:
        return "none"
    return "full" if refunded_minor >= int(order["paid_minor"] or 0) else "partial"


def hold(
    conn: Connection, ledger: Ledger, refund: Mapping[Any, Any], *, source: str, now_us: int
) -> None:
    """Hold what the refund will take (as much as is available now) while the provider works."""
    order = repo.lock_order(conn, int(refund["order_id"]))
    user_id, bucket = int(order["user_id"]), str(order["bucket"])
    tx = ledger.tx(conn)
    bal = ledger.balance(tx, user_id, bucket)
    amount = min(int(refund["amount_nanos"]), max(bal.available_nanos, 0))
    key = f"hold:{refund['idempotency_key']}"
    held = 0
    if amount > 0 and bal.debt_nanos == 0:
        try:
            ledger.place_hold(
                tx,
                user_id=user_id,
                bucket=bucket,
                amount_nanos=amount,
                hold_key=key,
                ttl_seconds=REFUND_HOLD_TTL_SECONDS,
                cause_type="refund",
                cause_id=str(refund["public_id"]),
            )
            held = amount
        except (InsufficientBalance, AccountOwes):
            held = 0  # spent in between: the refund's success books it as debt
    repo.update_refund(
        conn, int(refund["id"]), hold_key=key if held else "", held_nanos=held, updated_at=now_us
    )
    _set_refunded(
        conn,
        order,
        int(order["refunded_minor"]),
        now_us=now_us,
        source=source,
        detail=f"refund {refund['public_id']} of "
        f"{cur.minor_to_text(int(refund['amount_minor']), str(refund['currency']))} "
        f"{refund['currency']} in flight: {to_decimal_string(held)} held until the provider "
        "confirms it",
    )


def _hold_pending(conn: Connection, refund: Mapping[Any, Any]) -> bool:
    key = refund["hold_key"]
    return bool(key) and repo.hold_status(conn, str(key)) == "pending"


def release(
    conn: Connection, ledger: Ledger, refund: Mapping[Any, Any], *, source: str, now_us: int
) -> None:
    """The provider failed or canceled an in-flight refund: its hold is released, once."""
    order = repo.lock_order(conn, int(refund["order_id"]))
    pending = _hold_pending(conn, refund)
    if pending:
        ledger.release_hold(ledger.tx(conn), hold_key=str(refund["hold_key"]))
    refunded = int(order["refunded_minor"])
    if not pending and _refund_state(conn, order, refunded) == order["refund_state"]:
        return  # already released (a repeated notice)
    _set_refunded(
        conn,
        order,
        refunded,
        now_us=now_us,
        source=source,
        detail=f"refund {refund['public_id']} {refund_status_word(refund)} at the provider; "
        f"the {to_decimal_string(int(refund['held_nanos']))} held for it is released",
    )


def refund_status_word(refund: Mapping[Any, Any]) -> str:
    return "canceled" if refund["status"] == "canceled" else "failed"


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
    memo = f"refund of top-up {order['public_id']}"
    taken = debt = 0
    entry_id = None
    if _hold_pending(conn, refund):
        settled = ledger.settle_hold(
            tx,
            hold_key=str(refund["hold_key"]),
            actual_nanos=int(refund["held_nanos"]),
            kind="refund",
            revenue=f"clearing:{order['provider']}",
            cause_type="refund",
            cause_id=str(refund["public_id"]),
            memo=memo,
        )
        taken, entry_id = settled.charged_nanos, settled.entry_id
    rest = int(refund["amount_nanos"]) - taken
    if rest > 0:
        posted = ledger.reverse(
            tx,
            user_id=user_id,
            bucket=bucket,
            amount_nanos=rest,
            kind="refund",
            destination=f"clearing:{order['provider']}",
            idempotency_key=str(refund["idempotency_key"]),
            lot_id=order["lot_id"],
            cause_type="refund",
            cause_id=str(refund["public_id"]),
            memo=memo,
        )
        entry_id = entry_id or posted.entry_id
        taken += int(posted.extra["taken_nanos"])
        debt = int(posted.extra["debt_booked_nanos"])
    if debt == 0:
        state = "none"
    else:
        state = "awaiting_decision" if policy == "review" else "debt"
    after = ledger.balance(tx, user_id, bucket).balance_nanos
    repo.update_refund(
        conn,
        int(refund["id"]),
        entry_id=entry_id,
        taken_nanos=taken,
        debt_nanos=debt,
        shortfall_nanos=debt,
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
        f"{to_decimal_string(debt)}"
        + (" awaiting an operator's decision" if state == "awaiting_decision" else ""),
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
        refund_state=_refund_state(conn, order, refunded),
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
    """The provider reports a booked refund failed: give back exactly what it cost the user —
    what it took plus the debt it booked, less any shortfall already written off (the credit
    repays the debt first) — once."""
    if refund["recredit_entry_id"] is not None:
        return
    order = repo.lock_order(conn, int(refund["order_id"]))
    amount = int(refund["taken_nanos"]) + int(refund["debt_nanos"])
    if refund["shortfall_state"] == "written_off":
        amount -= int(refund["shortfall_nanos"])
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
        # Nothing to give back: unbook it so a repeated failure notice is a no-op.
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
    """An operator settles a ``review`` shortfall (booked as debt, awaiting this decision):
    keep it as debt, or write it off."""
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
        values["shortfall_state"] = "debt"  # already booked as debt: it simply stands
    else:
        # Forgiven: the platform credits the shortfall back, which repays the debt first
        # (or, if a top-up already repaid it, returns that money to the bucket).
        posted = ledger.credit(
            ledger.tx(conn),
            user_id=int(order["user_id"]),
            bucket=str(order["bucket"]),
            amount_nanos=int(refund["shortfall_nanos"]),
            kind="refund_write_off",
            source="adjust:admin",
            idempotency_key=f"{refund['idempotency_key']}:write_off",
            lot_kind="adjustment",
            cause_type="refund",
            cause_id=str(refund["public_id"]),
            memo=f"shortfall of refund {refund['public_id']} written off by {operator}",
        )
        values |= {"shortfall_state": "written_off", "shortfall_entry_id": posted.entry_id}
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
