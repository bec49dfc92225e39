"""WeChat Pay notices: the decrypted resource is authenticated (signed and AEAD-sealed), so
it is applied as the provider's truth for that transaction or refund, under the same
deterministic keys as every other provider: ``topup:wechat:<transaction_id>`` and
``refund:wechat:<refund_id>``. Amount and currency are checked against the order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from tallygate.inbox import service as inbox
from tallygate.ledger import Ledger
from tallygate.payments import orders, refunds
from tallygate.payments import repository as repo
from tallygate.payments.providers.wechat import WeChatProvider
from tallygate.state import AppState

REFUND_STATES = {
    "SUCCESS": "succeeded",
    "PROCESSING": "pending",
    "ABNORMAL": "failed",
    "CLOSED": "canceled",
}


class RefundBeforePayment(RuntimeError):
    """A refund notice for an order whose payment is not booked yet (out-of-order delivery)."""


def handle(state: AppState, wechat: WeChatProvider, inbox_id: int, notice: dict[str, Any]) -> None:
    """Apply one stored notice and stamp it handled in the same transaction; raises when it
    could not be processed (the job is retried)."""
    from tallygate.app import retry_conflicts

    def write() -> None:
        with state.db.begin() as conn:
            note = apply(
                conn,
                state.ledger,
                state.settings.refund_shortfall_policy,
                notice,
                now_us=state.now_us(),
            )
            inbox.mark_handled(conn, inbox_id, state.now_us(), note=note)

    retry_conflicts(write)


def apply(
    conn: Connection, ledger: Ledger, policy: str, notice: dict[str, Any], *, now_us: int
) -> str | None:
    resource = notice["resource"]
    order = repo.order_by_ref(conn, "wechat", str(resource.get("out_trade_no")))
    if order is None:
        return "no matching order"
    order_id = int(order["id"])
    amount = resource.get("amount") or {}
    if str(notice["event_type"]).startswith("TRANSACTION."):
        trade_state = str(resource.get("trade_state"))
        if trade_state == "SUCCESS":
            orders.mark_paid(
                conn,
                ledger,
                order_id,
                paid_minor=int(amount.get("total", 0)),
                paid_currency=str(amount.get("currency", "CNY")),
                payment_id=str(resource["transaction_id"]),
                source="webhook",
                now_us=now_us,
            )
        elif trade_state in ("CLOSED", "REVOKED"):
            orders.move(
                conn,
                order_id,
                "expired",
                source="webhook",
                now_us=now_us,
                detail=f"WeChat Pay: {trade_state}",
            )
        elif trade_state == "PAYERROR":
            orders.move(
                conn,
                order_id,
                "failed",
                source="webhook",
                now_us=now_us,
                detail="WeChat Pay: PAYERROR",
            )
        return None
    if str(notice["event_type"]).startswith("REFUND.") and order["status"] != "paid":
        # Delivered before the payment's own notice was applied: retried later (the job's
        # backoff), when the payment is booked, rather than dropped.
        raise RefundBeforePayment(
            f"refund notice for order {order['public_id']} ({order['status']}) before its payment"
        )
    if str(notice["event_type"]).startswith("REFUND."):
        refund_id = str(resource["refund_id"])
        status = REFUND_STATES.get(str(resource.get("refund_status")), "pending")
        record = repo.refund_by(conn, provider="wechat", provider_refund_id=refund_id)
        if record is None and resource.get("out_refund_no"):
            record = repo.refund_by(conn, public_id=str(resource["out_refund_no"]))
            if record is not None:
                repo.update_refund(conn, int(record["id"]), provider_refund_id=refund_id)
        if record is None:
            record = refunds.create_record(
                conn,
                repo.lock_order(conn, order_id),
                amount_minor=int(amount.get("refund", 0)),
                idempotency_key=f"refund:wechat:{refund_id}",
                source="webhook",
                status=status,
                provider_refund_id=refund_id,
                actor="wechat",
                reason="refund made in the WeChat Pay merchant console",
                now_us=now_us,
            )
        refunds.set_status(
            conn, ledger, record, status, policy=policy, source="webhook", now_us=now_us
        )
    return None
