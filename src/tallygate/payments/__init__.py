"""Top-up orders, payment providers, webhooks, refunds and disputes (docs/payments.md).

Only ``orders.mark_paid`` credits a bucket and only ``refunds`` / ``disputes`` take money
back; both call the ledger under deterministic idempotency keys, so every provider event can
be delivered any number of times, in any order."""
