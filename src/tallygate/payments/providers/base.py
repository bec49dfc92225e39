"""The provider interface and the registry built in the app's lifespan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tallygate.errors import BadRequest, ServiceUnavailable


class ProviderDisabled(BadRequest):
    code = "provider_disabled"


class ProviderError(ServiceUnavailable):
    """The provider's API refused or could not be reached."""

    code = "provider_error"


@dataclass(frozen=True, slots=True)
class Checkout:
    reference: str | None
    """The provider object that tracks the payment (checkout session, out_trade_no)."""
    url: str | None
    """Where the user pays (checkout page, WeChat ``code_url`` for the QR code)."""


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    id: str
    status: str


class Provider(Protocol):
    name: str

    def start(self, order: Mapping[Any, Any], *, return_url: str, cancel_url: str) -> Checkout:
        """Create the provider-side payment for ``order``; idempotent per order."""

    def refund(
        self, order: Mapping[Any, Any], *, amount_minor: int, idempotency_key: str, refund_id: str
    ) -> ProviderRefund:
        """Ask the provider to refund; the same key never refunds twice."""
