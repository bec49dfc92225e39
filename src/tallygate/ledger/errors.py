"""Ledger errors: each is refused before anything is written (or rolled back with it)."""

from __future__ import annotations

from tallygate.errors import BadRequest, Conflict, NotFound, PaymentRequired, Unauthorized
from tallygate.kit.money import to_decimal_string


class InvalidAmount(BadRequest):
    code = "invalid_amount"


class CurrencyMismatch(BadRequest):
    code = "currency_mismatch"


class UnbalancedEntry(BadRequest):
    code = "unbalanced_entry"


class UnknownAccount(NotFound):
    code = "unknown_account"


class HoldNotFound(NotFound):
    code = "hold_not_found"


class HoldNotPending(Conflict):
    """The hold was already resolved differently (settled, released or expired)."""

    code = "hold_not_pending"

    def __init__(self, hold_key: str, status: str) -> None:
        super().__init__(f"hold {hold_key} is already {status}", details={"status": status})
        self.hold_status = status


class InsufficientBalance(PaymentRequired):
    code = "insufficient_balance"

    def __init__(
        self, bucket: str, currency: str, shortfall_nanos: int, available_nanos: int
    ) -> None:
        super().__init__(
            f"insufficient balance in bucket {bucket}: short by "
            f"{to_decimal_string(shortfall_nanos)} {currency}",
            details={
                "bucket": bucket,
                "currency": currency,
                "shortfall_nanos": shortfall_nanos,
                "available_nanos": available_nanos,
            },
        )
        self.bucket = bucket
        self.shortfall_nanos = shortfall_nanos
        self.available_nanos = available_nanos


class AccountOwes(PaymentRequired):
    code = "account_owes"

    def __init__(self, bucket: str, currency: str, debt_nanos: int) -> None:
        super().__init__(
            f"bucket {bucket} has an outstanding debt of {to_decimal_string(debt_nanos)} "
            f"{currency}: top up to repay it before new requests",
            details={"bucket": bucket, "currency": currency, "debt_nanos": debt_nanos},
        )
        self.bucket = bucket
        self.debt_nanos = debt_nanos


class KeyNotUsable(Unauthorized):
    """The API key was revoked or has expired (checked inside the hold, so exact everywhere)."""

    code = "invalid_api_key"


class KeySpendLimit(PaymentRequired):
    """The key's spend limit for this bucket would be passed by this request's hold."""

    code = "key_spend_limit"

    def __init__(
        self, bucket: str, currency: str, period: str, limit_nanos: int, used_nanos: int
    ) -> None:
        super().__init__(
            f"this API key's {period} spend limit for bucket {bucket} "
            f"({to_decimal_string(limit_nanos)} {currency}) would be exceeded: "
            f"{to_decimal_string(used_nanos)} {currency} already spent or reserved",
            details={
                "bucket": bucket,
                "currency": currency,
                "period": period,
                "limit_nanos": limit_nanos,
                "used_nanos": used_nanos,
            },
        )
        self.period = period
