"""Read models: an order with its history, lot usage and refunds; refund records; the
post-payment state; the printable receipt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, select

from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import to_decimal_string
from tallygate.ledger import Ledger
from tallygate.models.catalog import model_offers, models
from tallygate.payments import currency as cur
from tallygate.payments import repository as repo
from tallygate.payments.schemas import (
    EntryRef,
    JobList,
    JobOut,
    LotUsage,
    NextStep,
    OrderEvent,
    OrderOut,
    PaymentState,
    Receipt,
    RefundOut,
)

LABELS = {"credit": "Credit", "routed": "Routed balance"}
ROUTE_TYPES = {"credit": "official", "routed": "routed"}
CHARGE_POLICY_URL = "docs/billing.md#when-a-request-does-not-end-normally-the-charge-policy"


def _dec(nanos: int | None) -> str | None:
    return None if nanos is None else to_decimal_string(int(nanos))


def entry_ref(conn: Connection, entry_id: int | None) -> EntryRef | None:
    if entry_id is None:
        return None
    row = repo.entry_summary(conn, int(entry_id))
    if row is None:
        return None
    return EntryRef(
        entry_id=int(row["id"]),
        kind=str(row["kind"]),
        idempotency_key=str(row["idempotency_key"]),
        time=from_epoch_us(int(row["created_at"])),
    )


def next_action(refund: Mapping[Any, Any]) -> str:
    state = str(refund["shortfall_state"])
    if refund["status"] in ("requested", "pending", "requires_action") and not refund["booked_at"]:
        held = to_decimal_string(int(refund["held_nanos"]))
        return (
            f"waiting for the provider: {held} is held (not spendable) until the refund "
            "succeeds (then it is taken) or fails (then it is released)"
        )
    if state == "debt":
        return "the shortfall is debt: the bucket is blocked until a top-up repays it"
    if state == "awaiting_decision":
        return (
            "the shortfall is booked as debt awaiting an operator's decision (keep it as debt "
            "or write it off); until then new requests on this bucket are refused with "
            "account_owes and a top-up repays it first"
        )
    if state == "written_off":
        return "the shortfall was written off; nothing more to do"
    return "none: the bucket covered the refund"


def hold_status(conn: Connection, refund: Mapping[Any, Any]) -> str | None:
    """The in-flight hold's state: pending, settled (taken), released; None if none."""
    return repo.hold_status(conn, str(refund["hold_key"])) if refund["hold_key"] else None


def refund_out(conn: Connection, order: Mapping[Any, Any], refund: Mapping[Any, Any]) -> RefundOut:
    used = refund["credit_used_nanos"]
    return RefundOut(
        id=str(refund["public_id"]),
        order_id=str(order["public_id"]),
        provider=str(refund["provider"]),
        provider_reference=order["provider_payment_id"] or order["provider_ref"],
        provider_refund_id=refund["provider_refund_id"],
        bucket=order["bucket"],
        bucket_currency=str(order["bucket_currency"]),
        original_credited_nanos=int(order["credited_nanos"] or 0),
        original_credited=to_decimal_string(int(order["credited_nanos"] or 0)),
        currency=str(refund["currency"]),
        refunded_minor=int(refund["amount_minor"]),
        refunded=cur.minor_to_text(int(refund["amount_minor"]), str(refund["currency"])),
        refunded_nanos=int(refund["amount_nanos"]),
        status=str(refund["status"]),
        source=str(refund["source"]),
        actor=str(refund["actor"]),
        reason=str(refund["reason"]),
        time=from_epoch_us(int(refund["booked_at"] or refund["first_seen_at"])),
        credit_already_used=None if used is None else int(used) > 0,
        credit_used_nanos=None if used is None else int(used),
        balance_after_nanos=refund["balance_after_nanos"],
        balance_after=_dec(refund["balance_after_nanos"]),
        debit_entry=entry_ref(conn, refund["entry_id"]),
        held_nanos=int(refund["held_nanos"]),
        hold_status=hold_status(conn, refund),
        taken_nanos=int(refund["taken_nanos"]),
        debt_nanos=int(refund["debt_nanos"]),
        shortfall_nanos=int(refund["shortfall_nanos"]),
        shortfall_state=str(refund["shortfall_state"]),
        next_action=next_action(refund),
        decision_reason=str(refund["decision_reason"]),
        idempotency_key=str(refund["idempotency_key"]),
        first_seen_at=from_epoch_us(int(refund["first_seen_at"])),
        duplicates_suppressed=int(refund["duplicates_suppressed"]),
        receipts=orjson.loads(refund["receipts_json"]),
        recredit_entry=entry_ref(conn, refund["recredit_entry_id"]),
    )


def actions(order: Mapping[Any, Any], now_us: int) -> list[str]:
    """Only a live pending order offers to pay; closed orders never offer anything, nor does
    an order whose payment arrived with the wrong amount (it waits for an operator: paying
    again would take the money twice)."""
    if order["status"] != "pending" or int(order["expires_at"]) <= now_us:
        return []
    if order["flag"] == "amount_mismatch":
        return []
    if order["provider"] == "bank":
        return ["submit_transfer", "cancel"]
    return ["pay", "cancel"]


def usage(conn: Connection, order: Mapping[Any, Any]) -> LotUsage | None:
    if order["lot_id"] is None:
        return None
    original, remaining, used, receipts = repo.lot_usage(conn, int(order["lot_id"]))
    return LotUsage(
        lot_id=int(order["lot_id"]),
        original_nanos=original,
        remaining_nanos=remaining,
        used_nanos=used,
        used=to_decimal_string(used),
        receipts=receipts,
    )


def order_out(conn: Connection, order: Mapping[Any, Any], *, now_us: int) -> OrderOut:
    currency = str(order["currency"])
    return OrderOut(
        id=str(order["public_id"]),
        user_id=int(order["user_id"]),
        status=str(order["status"]),
        test_mode=bool(order["test_mode"]),
        bucket=order["bucket"],
        bucket_label=LABELS[str(order["bucket"])],
        bucket_currency=str(order["bucket_currency"]),
        provider=str(order["provider"]),
        currency=currency,
        amount_minor=int(order["amount_minor"]),
        amount=cur.minor_to_text(int(order["amount_minor"]), currency),
        rate=str(order["rate"]),
        bonus_rate=str(order["bonus_rate"]),
        quoted_nanos=int(order["quoted_nanos"]),
        quoted=to_decimal_string(int(order["quoted_nanos"])),
        paid_minor=order["paid_minor"],
        paid_currency=order["paid_currency"],
        credited_nanos=order["credited_nanos"],
        credited=_dec(order["credited_nanos"]),
        provider_reference=order["provider_ref"],
        provider_payment_id=order["provider_payment_id"],
        checkout_url=order["checkout_url"] if "pay" in actions(order, now_us) else None,
        transfer_reference=order["transfer_reference"],
        refund_state=str(order["refund_state"]),
        dispute_state=str(order["dispute_state"]),
        refunded_minor=int(order["refunded_minor"]),
        flag=order["flag"],
        flag_detail=order["flag_detail"],
        first_approval=(
            orjson.loads(order["first_approval_json"]) if order["first_approval_json"] else None
        ),
        paid_after_expiry=bool(order["paid_after_expiry"]),
        status_reason=str(order["status_reason"]),
        actions=actions(order, now_us),
        expires_at=from_epoch_us(int(order["expires_at"])),
        created_at=from_epoch_us(int(order["created_at"])),
        paid_at=None if order["paid_at"] is None else from_epoch_us(int(order["paid_at"])),
        entry=entry_ref(conn, order["entry_id"]),
        usage=usage(conn, order),
        history=[
            OrderEvent(
                at=from_epoch_us(int(e["at"])),
                from_status=e["from_status"],
                to_status=str(e["to_status"]),
                source=str(e["source"]),
                detail=str(e["detail"]),
            )
            for e in repo.events_of(conn, int(order["id"]))
        ],
        refunds=[refund_out(conn, order, r) for r in repo.refunds_of(conn, int(order["id"]))],
    )


def models_for(conn: Connection, route_type: str) -> list[str]:
    stmt = (
        select(models.c.name)
        .join(model_offers, model_offers.c.model_id == models.c.id)
        .where(
            model_offers.c.route_type == route_type,
            model_offers.c.enabled == 1,
            models.c.enabled == 1,
        )
        .order_by(models.c.name)
    )
    return [str(n) for n in conn.execute(stmt).scalars()]


PHASES = {
    "pending": ("confirming", "Waiting for the payment provider to confirm your payment."),
    "processing": ("confirming", "Your payment is being confirmed by the provider."),
    "awaiting_review": ("review", "Your transfer is waiting for an operator to check it."),
    "expired": ("closed", "This order expired before any payment arrived; nothing was charged."),
    "canceled": ("closed", "This order was canceled; nothing was charged."),
    "failed": ("failed", "The payment failed; no balance was added."),
    "rejected": ("closed", "The transfer was rejected; no balance was added."),
}

MISMATCH_MESSAGE = (
    "A payment arrived, but its amount or currency differs from the order: nothing was "
    "credited yet. An operator reviews it; do not pay again."
)


def payment_state(conn: Connection, ledger: Ledger, order: Mapping[Any, Any]) -> PaymentState:
    bucket = str(order["bucket"])
    balance = ledger.balance(ledger.tx(conn), int(order["user_id"]), bucket)
    paid = order["status"] == "paid"
    repaid = 0
    if paid:
        arrived = int(order["credited_nanos"])
        lot_nanos = 0
        if order["lot_id"] is not None:
            lot_nanos = repo.lot_usage(conn, int(order["lot_id"]))[0]
        repaid = arrived - lot_nanos
        if balance.debt_nanos:
            phase, message = "owed", "Payment received, but this bucket still owes a debt."
        else:
            phase, message = "ready", "Payment received: the balance is ready to use."
    elif order["flag"] == "amount_mismatch":
        phase, message = "review", MISMATCH_MESSAGE
    else:
        phase, message = PHASES[str(order["status"])]
    route_type = ROUTE_TYPES[bucket]
    public_id = str(order["public_id"])
    return PaymentState(
        order_id=public_id,
        status=str(order["status"]),
        phase=phase,  # type: ignore[arg-type]
        message=message,
        test_mode=bool(order["test_mode"]),
        bucket=bucket,  # type: ignore[arg-type]
        bucket_label=LABELS[bucket],
        bucket_currency=str(order["bucket_currency"]),
        arrived_nanos=order["credited_nanos"] if paid else None,
        arrived=_dec(order["credited_nanos"]) if paid else None,
        debt_repaid_nanos=repaid,
        ready_to_use=paid and balance.debt_nanos == 0 and balance.available_nanos > 0,
        balance_nanos=balance.balance_nanos,
        balance=to_decimal_string(balance.balance_nanos),
        available_nanos=balance.available_nanos,
        debt_nanos=balance.debt_nanos,
        route_type=route_type,
        models=models_for(conn, route_type),
        entry=entry_ref(conn, order["entry_id"]),
        receipt_url=f"/api/payments/orders/{public_id}/receipt" if paid else None,
        charge_policy_url=CHARGE_POLICY_URL,
        next_steps=[
            NextStep(label="Create an API key", href="/api/keys"),
            NextStep(
                label=f"Run a model on the {LABELS[bucket]} ({route_type} route)",
                href="/v1/chat/completions",
            ),
            NextStep(label="See the wallet ledger", href=f"/api/wallet/ledger?bucket={bucket}"),
        ],
    )


def receipt(conn: Connection, order: Mapping[Any, Any]) -> Receipt:
    currency = str(order["paid_currency"])
    return Receipt(
        order_id=str(order["public_id"]),
        test_mode=bool(order["test_mode"]),
        user_id=int(order["user_id"]),
        provider=str(order["provider"]),
        provider_reference=order["provider_ref"],
        provider_payment_id=order["provider_payment_id"],
        paid_at=from_epoch_us(int(order["paid_at"])),
        paid=cur.minor_to_text(int(order["paid_minor"]), currency),
        currency=currency,
        rate=str(order["rate"]),
        bonus_rate=str(order["bonus_rate"]),
        credited=to_decimal_string(int(order["credited_nanos"])),
        bucket=order["bucket"],
        bucket_label=LABELS[str(order["bucket"])],
        bucket_currency=str(order["bucket_currency"]),
        entry=entry_ref(conn, order["entry_id"]),
        refund_state=str(order["refund_state"]),
        refunded=cur.minor_to_text(int(order["refunded_minor"]), currency),
    )


def job_list(rows: list[Any]) -> JobList:
    return JobList(
        items=[
            JobOut(
                id=int(r["id"]),
                source=str(r["source"]),
                event_type=str(r["event_type"]),
                external_id=str(r["external_id"]),
                status=r["status"],
                attempts=int(r["attempts"]),
                run_after=from_epoch_us(int(r["run_after"])),
                last_error=r["last_error"],
                received_at=from_epoch_us(int(r["received_at"])),
            )
            for r in rows
        ]
    )
