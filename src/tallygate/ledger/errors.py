"""Ledger errors: each is refused before anything is written (or rolled back with it)."""

from __future__ import annotations

from tallygate.errors import BadRequest, Conflict, NotFound, PaymentRequired
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
        self.status = status


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
