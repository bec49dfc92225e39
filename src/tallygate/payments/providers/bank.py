"""Manual bank transfer: nothing to call. The user submits the transfer reference; an
operator checks the statement and approves (with the amount seen) or rejects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tallygate.payments.providers.base import Checkout, ProviderRefund


class BankProvider:
    """Manual bank transfer: nothing to call; the user submits a reference, an operator
    checks the statement."""

    name = "bank"

    def start(self, order: Mapping[Any, Any], *, return_url: str, cancel_url: str) -> Checkout:
        return Checkout(str(order["public_id"]), None)

    def refund(
        self, order: Mapping[Any, Any], *, amount_minor: int, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        raise NotImplementedError("bank transfers are refunded manually")
