"""Top-up flows that span a provider call: each runs its own short transactions around the
network call, so no database lock is held while a provider answers.

- ``start_order``: create the order (committed), create the provider's checkout, store its id;
- ``confirm``: the return URL asks the provider now (Stripe's fulfilment on redirect), so the
  post-payment page resolves even before the webhook;
- ``start_refund``: the refund record and its idempotency key are committed before the
  provider is called, and the provider's refund id is stored as soon as it answers (a webhook
  that wins that race finds the record through the refund's metadata)."""

from __future__ import annotations

import uuid

from sqlalchemy import RowMapping

from tallygate.audit import service as audit
from tallygate.payments import currency as cur
from tallygate.payments import orders, refunds
from tallygate.payments import repository as repo
from tallygate.payments.providers.base import ProviderError
from tallygate.payments.registry import Payments
from tallygate.payments.schemas import OrderCreate, RefundCreate
from tallygate.state import AppState


def start_order(
    state: AppState, payments: Payments, *, user_id: int, body: OrderCreate, base_url: str
) -> RowMapping:
    provider = payments.get(body.provider)
    with state.db.begin() as conn:
        order = orders.create(
            conn,
            settings=state.settings,
            currencies=state.ledger.currencies,
            user_id=user_id,
            bucket=body.bucket,
            provider=body.provider,
            amount=body.amount,
            currency=body.currency,
            now_us=state.now_us(),
        )
    public_id = str(order["public_id"])
    back = f"{state.settings.public_url.rstrip('/') or base_url.rstrip('/')}"
    try:
        checkout = provider.start(
            order,
            # Back from the checkout, the payer lands on the wallet's post-payment panel.
            return_url=f"{back}/?order={public_id}",
            cancel_url=f"{back}/?order={public_id}&canceled=1",
        )
    except ProviderError as exc:
        with state.db.begin() as conn:
            orders.move(
                conn,
                int(order["id"]),
                "failed",
                source="system",
                now_us=state.now_us(),
                detail=exc.message,
            )
        raise
    url = checkout.url
    if url is not None and url.startswith("/"):
        url = back + url
    with state.db.begin() as conn:
        repo.update_order(conn, int(order["id"]), provider_ref=checkout.reference, checkout_url=url)
        return repo.lock_order(conn, int(order["id"]))


def confirm(state: AppState, payments: Payments, order: RowMapping) -> None:
    """Ask the provider about an unfinished order (idempotent, same path as the webhook)."""
    if order["status"] not in ("pending", "processing", "expired", "canceled"):
        return
    if order["provider"] == "stripe" and payments.stripe and order["provider_ref"]:
        from tallygate.payments.stripe_events import apply_truth

        truth = payments.stripe.truth(str(order["provider_ref"]))
        with state.db.begin() as conn:
            apply_truth(
                conn,
                state.ledger,
                state.settings,
                int(order["id"]),
                truth,
                source="redirect",
                announced=set(),
                now_us=state.now_us(),
            )


def cancel(state: AppState, *, public_id: str, user_id: int) -> RowMapping:
    with state.db.begin() as conn:
        order = orders.get(conn, public_id, user_id=user_id)
        if order["flag"] == "amount_mismatch" and order["status"] == "pending":
            raise orders.OrderStateConflict(
                f"order {public_id} cannot be canceled: a payment for it arrived with a "
                "different amount and waits for an operator's review",
                details={"status": order["status"], "flag": order["flag"]},
            )
        return orders.move(
            conn,
            int(order["id"]),
            "canceled",
            source="user",
            now_us=state.now_us(),
            strict=True,
            detail="canceled by the user",
        )


def submit_transfer(state: AppState, *, public_id: str, user_id: int, reference: str) -> RowMapping:
    with state.db.begin() as conn:
        order = orders.get(conn, public_id, user_id=user_id)
        if order["provider"] != "bank":
            raise orders.InvalidTopUp("only bank transfer orders take a transfer reference")
        return orders.move(
            conn,
            int(order["id"]),
            "awaiting_review",
            source="user",
            now_us=state.now_us(),
            strict=True,
            detail=f"transfer reference {reference}",
            transfer_reference=reference,
        )


def sandbox_act(
    state: AppState, *, public_id: str, action: str, amount: str | None, currency: str | None
) -> RowMapping:
    """The sandbox checkout page's buttons (test mode only)."""
    with state.db.begin() as conn:
        order = orders.get(conn, public_id)
        if order["provider"] != "sandbox":
            raise orders.OrderNotFound(f"no sandbox order {public_id}")
        order_id, now = int(order["id"]), state.now_us()
        if action in ("pay", "succeed"):
            paid_currency = (currency or str(order["currency"])).upper()
            minor = cur.to_minor(amount, paid_currency) if amount else int(order["amount_minor"])
            return orders.mark_paid(
                conn,
                state.ledger,
                order_id,
                paid_minor=minor,
                paid_currency=paid_currency,
                payment_id=f"sbx_pay_{public_id}",
                source="sandbox",
                now_us=now,
            )
        if action == "pending":
            return order
        moves = {"processing": "processing", "fail": "failed", "cancel": "canceled"}
        if action not in moves:
            raise orders.InvalidTopUp(f"unknown sandbox action {action!r}", param="action")
        return orders.move(
            conn,
            order_id,
            moves[action],
            source="sandbox",
            now_us=now,
            strict=True,
            detail=f"sandbox: {action}",
        )


def start_refund(
    state: AppState, payments: Payments, *, public_id: str, body: RefundCreate, operator: str
) -> tuple[RowMapping, RowMapping]:
    """An operator refunds (part of) a paid order; returns (order, refund record)."""
    policy = state.settings.refund_shortfall_policy
    with state.db.begin() as conn:
        order = orders.get(conn, public_id)
        order = repo.lock_order(conn, int(order["id"]))
        provider_name = str(order["provider"])
        manual = body.mode == "manual" or provider_name == "bank"
        key = f"refund:{provider_name}:op:{body.idempotency_key or uuid.uuid4().hex}"
        existing = repo.refund_by(conn, idempotency_key=key)
        if existing is not None:
            return order, existing
        if order["status"] != "paid":
            raise refunds.RefundNotAllowed(f"order {public_id} is {order['status']}, not paid")
        left = refunds.refundable_minor(conn, order)
        amount = cur.to_minor(body.amount, str(order["currency"])) if body.amount else left
        if amount <= 0 or amount > left:
            raise refunds.RefundNotAllowed(
                f"at most {cur.minor_to_text(max(left, 0), str(order['currency']))} "
                f"{order['currency']} of this order can still be refunded",
                details={"refundable_minor": left},
            )
        record = refunds.create_record(
            conn,
            order,
            amount_minor=amount,
            idempotency_key=key,
            source="manual" if manual else "admin",
            status="succeeded" if manual else "requested",
            actor=operator,
            reason=body.reason,
            now_us=state.now_us(),
        )
        audit.record(
            state.ledger.tx(conn),
            now_us=state.now_us(),
            actor=operator,
            source="operator",
            action="refund.manual" if manual else "refund.start",
            target=f"order:{public_id}",
            after={
                "refund": record["public_id"],
                "amount_minor": amount,
                "currency": order["currency"],
                "idempotency_key": key,
            },
            reason=body.reason,
        )
        # Manual: booked at once. Through the provider: its money is held until it answers.
        record = refunds.set_status(
            conn,
            state.ledger,
            record,
            "succeeded" if manual else "requested",
            policy=policy,
            source="operator",
            now_us=state.now_us(),
        )
        if manual:
            return repo.lock_order(conn, int(order["id"])), record
    try:
        answer = payments.get(provider_name).refund(
            order, amount_minor=amount, idempotency_key=key, refund_id=str(record["public_id"])
        )
    except ProviderError as exc:
        with state.db.begin() as conn:
            repo.lock_order(conn, int(order["id"]))
            repo.update_refund(
                conn, int(record["id"]), reason=f"{body.reason} (provider refused: {exc.message})"
            )
            current = repo.refund_by(conn, id=int(record["id"]))
            assert current is not None
            refunds.set_status(  # releases the hold placed for it
                conn,
                state.ledger,
                current,
                "failed",
                policy=policy,
                source="operator",
                now_us=state.now_us(),
            )
        raise
    with state.db.begin() as conn:
        order = repo.lock_order(conn, int(order["id"]))
        current = repo.refund_by(conn, id=int(record["id"]))
        assert current is not None
        if current["provider_refund_id"] is None:
            repo.update_refund(conn, int(record["id"]), provider_refund_id=answer.id)
        record = refunds.set_status(
            conn,
            state.ledger,
            current,
            answer.status,
            policy=policy,
            source="operator",
            now_us=state.now_us(),
        )
        return repo.lock_order(conn, int(order["id"])), record
