"""The built-in test-mode provider: a checkout page on this server whose buttons pay, fail,
cancel, leave pending or go through ``processing``. No money moves anywhere; every sandbox
order is ``test_mode`` and says so on every surface."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from tallygate.payments.providers.base import Checkout, ProviderRefund


class SandboxProvider:
    name = "sandbox"

    def __init__(self, base_url: str = "") -> None:
        self.base_url = base_url

    def start(self, order: Mapping[Any, Any], *, return_url: str, cancel_url: str) -> Checkout:
        ref = str(order["public_id"])
        return Checkout(ref, f"{self.base_url}/sandbox/checkout/{ref}")

    def refund(
        self, order: Mapping[Any, Any], *, amount_minor: int, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]
        return ProviderRefund(f"sbx_re_{digest}", "succeeded")
