"""The ledger: the only code that moves money (see docs/decisions/0002-ledger-design.md).

Every balance is a sum of postings. Operations take a ``Tx`` (one open write transaction) and
never commit; the caller's boundary (an API request, a CLI command, the group-commit
executor) commits or rolls back."""

from tallygate.ledger.errors import (
    AccountOwes,
    CurrencyMismatch,
    HoldNotFound,
    HoldNotPending,
    InsufficientBalance,
    InvalidAmount,
    UnbalancedEntry,
    UnknownAccount,
)
from tallygate.ledger.service import BUCKETS, Ledger
from tallygate.ledger.tx import Tx

__all__ = [
    "BUCKETS",
    "AccountOwes",
    "CurrencyMismatch",
    "HoldNotFound",
    "HoldNotPending",
    "InsufficientBalance",
    "InvalidAmount",
    "Ledger",
    "Tx",
    "UnbalancedEntry",
    "UnknownAccount",
]
