"""Disputes (chargebacks): one ledger effect per dispute balance transaction.

A withdrawal reverses the credit (what the bucket cannot cover becomes debt) and flags the
account; a reinstatement (dispute won) credits it back; a lost dispute leaves the withdrawal.
Keys are ``dispute:<provider>:<balance transaction id>``, so any delivery order is harmless."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from tallygate.audit import service as audit
from tallygate.ledger import Ledger
from tallygate.payments import currency as cur
from tallygate.payments import repository as repo
from tallygate.payments.orders import flag, order_factor

WON = ("won", "warning_closed", "prevented")
LOST = ("lost",)


def dispute_state(status: str) -> str:
    return "won" if status in WON else "lost" if status in LOST else "open"


def apply(
    conn: Connection,
    ledger: Ledger,
    order: Mapping[Any, Any],
    *,
    dispute_id: str,
    status: str,
    balance_transactions: list[tuple[str, int, str]],
    source: str,
    now_us: int,
) -> None:
    """Bring the ledger to the dispute's balance transactions (the order is locked, paid)."""
    provider = str(order["provider"])
    tx = ledger.tx(conn)
    common: dict[str, Any] = {
        "user_id": int(order["user_id"]),
        "bucket": str(order["bucket"]),
        "kind": "dispute",
        "cause_type": "dispute",
        "cause_id": dispute_id,
    }
    for bt_id, amount, currency in balance_transactions:
        key = f"dispute:{provider}:{bt_id}"
        nanos = cur.to_nanos(abs(amount), currency, order_factor(order))
        if nanos <= 0:
            continue
        if amount < 0:
            posted = ledger.reverse(
                tx,
                amount_nanos=nanos,
                destination=f"clearing:{provider}",
                idempotency_key=key,
                lot_id=order["lot_id"],
                memo=f"dispute {dispute_id}: funds withdrawn",
                **common,
            )
            if not posted.replayed:
                flag(conn, order, "disputed", {"dispute": dispute_id}, source=source, now_us=now_us)
                audit.record(
                    tx,
                    now_us=now_us,
                    actor=provider,
                    source="webhook",
                    action="dispute.funds_withdrawn",
                    target=f"user:{order['user_id']}",
                    after={
                        "order": order["public_id"],
                        "dispute": dispute_id,
                        "amount_nanos": nanos,
                        "debt_booked_nanos": posted.extra["debt_booked_nanos"],
                    },
                    reason="chargeback: the payment was disputed",
                )
        else:
            ledger.credit(
                tx,
                amount_nanos=nanos,
                source=f"clearing:{provider}",
                idempotency_key=key,
                lot_kind="paid",
                memo=f"dispute {dispute_id}: funds reinstated",
                **common,
            )
    state = dispute_state(status)
    current = repo.lock_order(conn, int(order["id"]))
    if current["dispute_state"] != state:
        repo.update_order(conn, int(order["id"]), dispute_state=state, updated_at=now_us)
        repo.add_event(
            conn,
            int(order["id"]),
            at=now_us,
            from_status=str(current["status"]),
            to_status=str(current["status"]),
            source=source,
            detail=f"dispute {dispute_id} is {status} (dispute state {state})",
        )
