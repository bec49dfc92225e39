"""Operator adjustments: a credit or debit of a user's bucket with a mandatory reason,
optionally correcting a receipt; a ledger entry of kind ``adjustment`` plus an audit event."""
