"""Stripe events: find the order, re-fetch Stripe's truth, post only the difference.

Every handler does the same thing whatever the event type: read the Checkout Session, its
PaymentIntent, refunds and disputes from Stripe now, and bring the order and the ledger up to
that state — one credit per payment (``topup:stripe:<pi>``), one debit per refund id, one
effect per dispute balance transaction. Duplicates, stale snapshots and any delivery order
therefore converge on the provider's final truth."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from tallygate.config import Settings
from tallygate.inbox import service as inbox
from tallygate.ledger import Ledger
from tallygate.payments import disputes, orders, refunds
from tallygate.payments import repository as repo
from tallygate.payments.providers.stripe import StripeProvider, StripeRefund, StripeTruth
from tallygate.state import AppState


def announced_refunds(event: dict[str, Any]) -> set[str]:
    """Refund ids this event talks about (for the duplicates-suppressed count)."""
    kind = str(event.get("type", ""))
    obj = event.get("data", {}).get("object", {})
    if kind.startswith(("refund.", "charge.refund.")):
        return {str(obj.get("id"))}
    if kind == "charge.refunded":
        return {str(r.get("id")) for r in (obj.get("refunds") or {}).get("data", [])}
    return set()


def find_order(state: AppState, stripe: StripeProvider, event: dict[str, Any]) -> int | None:
    obj = event.get("data", {}).get("object", {})
    kind = str(event.get("type", ""))
    with state.db.read() as conn:
        if kind.startswith("checkout.session."):
            order = repo.order_by_ref(conn, "stripe", str(obj.get("id")))
            return None if order is None else int(order["id"])
        pi = obj.get("payment_intent")
        if isinstance(pi, dict):
            pi = pi.get("id")
        if not pi:
            return None
    public_id = stripe.order_of_payment_intent(str(pi))
    if public_id is None:
        return None
    with state.db.read() as conn:
        order = repo.order_by_public_id(conn, public_id)
        return None if order is None or order["provider"] != "stripe" else int(order["id"])


def handle(
    state: AppState, stripe: StripeProvider, inbox_id: int, event: dict[str, Any], source: str
) -> None:
    """Handle one stored event and stamp it handled in the same transaction; raises when it
    could not be processed (the job is retried)."""
    from tallygate.app import retry_conflicts

    order_id = find_order(state, stripe, event)
    if order_id is None:
        with state.db.begin() as conn:
            inbox.mark_handled(conn, inbox_id, state.now_us(), note="no matching order")
        return
    with state.db.read() as conn:
        session_id = str(repo.order_by_id(conn, order_id)["provider_ref"])
    truth = stripe.truth(session_id)

    def write() -> None:
        with state.db.begin() as conn:
            apply_truth(
                conn,
                state.ledger,
                state.settings,
                order_id,
                truth,
                source=source,
                announced=announced_refunds(event),
                now_us=state.now_us(),
            )
            inbox.mark_handled(conn, inbox_id, state.now_us())

    retry_conflicts(write)


def apply_truth(
    conn: Connection,
    ledger: Ledger,
    settings: Settings,
    order_id: int,
    truth: StripeTruth,
    *,
    source: str,
    announced: set[str],
    now_us: int,
) -> None:
    order = repo.lock_order(conn, order_id)
    if order["provider_payment_id"] is None and truth.payment_intent:
        repo.update_order(conn, order_id, provider_payment_id=truth.payment_intent)
    if truth.paid:
        orders.mark_paid(
            conn,
            ledger,
            order_id,
            paid_minor=truth.amount_received,
            paid_currency=truth.currency,
            payment_id=truth.payment_intent or truth.session_id,
            source=source,
            now_us=now_us,
        )
    elif truth.session_status == "complete":
        failed = truth.pi_status in ("requires_payment_method", "canceled")
        detail = (
            "the delayed payment failed" if failed else "payment submitted; Stripe is confirming"
        )
        orders.move(
            conn,
            order_id,
            "failed" if failed else "processing",
            source=source,
            now_us=now_us,
            detail=detail,
        )
    elif truth.session_status == "expired":
        orders.move(
            conn,
            order_id,
            "expired",
            source=source,
            now_us=now_us,
            detail="the Checkout Session expired unpaid",
        )
    order = repo.lock_order(conn, order_id)
    if order["status"] != "paid":
        return
    for refund in truth.refunds:
        sync_refund(
            conn, ledger, settings, order, refund, announced=announced, source=source, now_us=now_us
        )
    for dispute in truth.disputes:
        disputes.apply(
            conn,
            ledger,
            repo.lock_order(conn, order_id),
            dispute_id=dispute.id,
            status=dispute.status,
            balance_transactions=dispute.balance_transactions,
            source=source,
            now_us=now_us,
        )


def sync_refund(
    conn: Connection,
    ledger: Ledger,
    settings: Settings,
    order: Any,
    refund: StripeRefund,
    *,
    announced: set[str],
    source: str,
    now_us: int,
) -> None:
    record = repo.refund_by(conn, provider="stripe", provider_refund_id=refund.id)
    if record is None and refund.tallygate_refund:
        # An operator's refund whose webhook came before we stored Stripe's id.
        record = repo.refund_by(conn, public_id=refund.tallygate_refund)
        if record is not None:
            repo.update_refund(conn, int(record["id"]), provider_refund_id=refund.id)
    if record is None:
        record = refunds.create_record(
            conn,
            order,
            amount_minor=refund.amount,
            idempotency_key=f"refund:stripe:{refund.id}",
            source="webhook",
            status=refund.status,
            provider_refund_id=refund.id,
            actor="stripe",
            reason=refund.reason or "refund made at Stripe",
            now_us=now_us,
        )
    elif refund.id in announced and record["status"] == refund.status:
        repo.update_refund(
            conn, int(record["id"]), duplicates_suppressed=record["duplicates_suppressed"] + 1
        )
    refunds.set_status(
        conn,
        ledger,
        record,
        refund.status,
        policy=settings.refund_shortfall_policy,
        source=source,
        now_us=now_us,
    )
