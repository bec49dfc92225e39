"""Stripe: Checkout Sessions through the official ``stripe`` library, and the provider's
current truth about a payment re-fetched from its API (events are only a nudge: they are
immutable snapshots that arrive in any order, so handlers never trust their contents).

The API base is a setting, so tests point the library at a local fake."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import stripe

from tallygate.config import Settings
from tallygate.payments.providers.base import Checkout, ProviderError, ProviderRefund


@dataclass(frozen=True, slots=True)
class StripeRefund:
    id: str
    amount: int
    currency: str
    status: str
    reason: str
    tallygate_refund: str | None
    """Our refund record's public id, when an operator started it through Tallygate."""


@dataclass(frozen=True, slots=True)
class StripeDispute:
    id: str
    status: str
    balance_transactions: list[tuple[str, int, str]]
    """(id, signed amount in minor units, currency): the withdrawal and any reinstatement."""


@dataclass(frozen=True, slots=True)
class StripeTruth:
    session_id: str
    session_status: str
    payment_status: str
    payment_intent: str | None
    pi_status: str | None
    amount_received: int
    currency: str
    refunds: list[StripeRefund] = field(default_factory=list)
    disputes: list[StripeDispute] = field(default_factory=list)

    @property
    def paid(self) -> bool:
        return self.pi_status == "succeeded" or self.payment_status == "paid"


def _get(obj: Any, name: str, default: Any = None) -> Any:
    try:
        value = obj[name]
    except (KeyError, TypeError):
        return default
    return default if value is None else value


def _id(value: Any) -> str | None:
    if value is None:
        return None
    return str(value) if isinstance(value, str) else str(_get(value, "id"))


class StripeProvider:
    name = "stripe"

    def __init__(self, settings: Settings) -> None:
        self.client = stripe.StripeClient(
            settings.stripe_secret_key or "sk_test_unset",
            base_addresses={"api": settings.stripe_api_base.rstrip("/")},
            max_network_retries=2,
        )
        self.session_ttl = max(settings.order_ttl_seconds, 1800)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as exc:
            raise ProviderError(f"Stripe refused the request: {exc.user_message or exc}") from exc

    def start(self, order: Mapping[Any, Any], *, return_url: str, cancel_url: str) -> Checkout:
        public_id = str(order["public_id"])
        metadata = {"tallygate_order": public_id}
        session = self._call(
            self.client.v1.checkout.sessions.create,
            params={
                "mode": "payment",
                "client_reference_id": public_id,
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": str(order["currency"]).lower(),
                            "unit_amount": int(order["amount_minor"]),
                            "product_data": {"name": f"Top-up ({order['bucket']})"},
                        },
                    }
                ],
                "success_url": return_url,
                "cancel_url": cancel_url,
                # Stripe's minimum is 30 minutes; a late payment is still credited anyway.
                "expires_at": int(time.time()) + self.session_ttl,
            },
            options={"idempotency_key": f"checkout:{public_id}"},
        )
        return Checkout(str(session["id"]), _get(session, "url"))

    def refund(
        self, order: Mapping[Any, Any], *, amount_minor: int, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        refund = self._call(
            self.client.v1.refunds.create,
            params={
                "payment_intent": str(order["provider_payment_id"]),
                "amount": amount_minor,
                "metadata": {"tallygate_refund": refund_id},
            },
            options={"idempotency_key": idempotency_key},
        )
        return ProviderRefund(str(refund["id"]), str(refund["status"]))

    def order_of_payment_intent(self, payment_intent: str) -> str | None:
        intent = self._call(self.client.v1.payment_intents.retrieve, payment_intent)
        found = _get(_get(intent, "metadata", {}), "tallygate_order")
        return None if found is None else str(found)

    def truth(self, session_id: str) -> StripeTruth:
        """The session, its payment, every refund and dispute, as Stripe has them now."""
        session = self._call(self.client.v1.checkout.sessions.retrieve, session_id)
        pi_id = _id(_get(session, "payment_intent"))
        pi_status, received = None, 0
        currency = str(_get(session, "currency", "")).upper()
        refunds: list[StripeRefund] = []
        disputes: list[StripeDispute] = []
        if pi_id:
            intent = self._call(self.client.v1.payment_intents.retrieve, pi_id)
            pi_status = str(_get(intent, "status"))
            received = int(_get(intent, "amount_received", 0))
            currency = str(_get(intent, "currency", currency)).upper()
            refunds = self._refunds(pi_id)
            disputes = self._disputes(pi_id)
        return StripeTruth(
            session_id=session_id,
            session_status=str(_get(session, "status")),
            payment_status=str(_get(session, "payment_status")),
            payment_intent=pi_id,
            pi_status=pi_status,
            amount_received=received,
            currency=currency,
            refunds=refunds,
            disputes=disputes,
        )

    def _refunds(self, pi_id: str) -> list[StripeRefund]:
        page = self._call(
            self.client.v1.refunds.list, params={"payment_intent": pi_id, "limit": 100}
        )
        return [
            StripeRefund(
                id=str(r["id"]),
                amount=int(r["amount"]),
                currency=str(r["currency"]).upper(),
                status=str(r["status"]),
                reason=str(_get(r, "reason", "")),
                tallygate_refund=_get(_get(r, "metadata", {}), "tallygate_refund"),
            )
            for r in page.auto_paging_iter()
        ]

    def _disputes(self, pi_id: str) -> list[StripeDispute]:
        page = self._call(
            self.client.v1.disputes.list, params={"payment_intent": pi_id, "limit": 100}
        )
        return [
            StripeDispute(
                id=str(d["id"]),
                status=str(d["status"]),
                balance_transactions=[
                    (str(bt["id"]), int(bt["amount"]), str(bt["currency"]).upper())
                    for bt in _get(d, "balance_transactions", [])
                ],
            )
            for d in page.auto_paging_iter()
        ]
