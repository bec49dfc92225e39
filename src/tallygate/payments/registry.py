"""The configured providers, built once in the app's lifespan (``app.state.payments``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from fastapi import Request

from tallygate.config import Settings
from tallygate.payments.providers.bank import BankProvider
from tallygate.payments.providers.base import Provider, ProviderDisabled
from tallygate.payments.providers.sandbox import SandboxProvider
from tallygate.payments.providers.stripe import StripeProvider

if TYPE_CHECKING:
    from tallygate.payments.providers.wechat import WeChatProvider


@dataclass
class Payments:
    sandbox: SandboxProvider | None
    stripe: StripeProvider | None
    wechat: WeChatProvider | None
    bank: BankProvider | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Payments:
        wechat = None
        if settings.wechat_mchid:
            from tallygate.payments.providers.wechat import WeChatProvider

            wechat = WeChatProvider(settings)
        return cls(
            sandbox=SandboxProvider() if settings.payments_sandbox else None,
            stripe=StripeProvider(settings) if settings.stripe_secret_key else None,
            wechat=wechat,
            bank=BankProvider() if settings.bank_instructions else None,
        )

    def enabled(self) -> list[str]:
        return [n for n in ("sandbox", "stripe", "wechat", "bank") if getattr(self, n)]

    def get(self, name: str) -> Provider:
        found = getattr(self, name, None)
        if found is None:
            raise ProviderDisabled(
                f"payment provider {name!r} is not enabled on this server", param="provider"
            )
        return cast(Provider, found)


def get_payments(request: Request) -> Payments:
    return cast(Payments, request.app.state.payments)
