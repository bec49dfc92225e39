"""Request and response models for top-ups, refunds and the post-payment state.

Money fields: ``*_minor`` are integer minor units of the payment currency (ISO 4217 exponent);
``*_nanos`` are integer nano-units of the bucket's currency; the plain-named string beside each
is the same amount as an exact decimal, for display. Never a float."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

Bucket = Literal["credit", "routed"]
Provider = Literal["sandbox", "stripe", "wechat", "bank"]


class OrderCreate(BaseModel):
    bucket: Bucket
    amount: str = Field(description="decimal amount in the payment currency, e.g. '10.00'")
    currency: str | None = Field(
        default=None, description="payment currency (default: the bucket's currency)"
    )
    provider: Provider


class TransferSubmit(BaseModel):
    reference: str = Field(min_length=1, max_length=200)


class OrderEvent(BaseModel):
    at: dt.datetime
    from_status: str | None
    to_status: str
    source: str
    detail: str


class EntryRef(BaseModel):
    entry_id: int
    kind: str
    idempotency_key: str
    time: dt.datetime


class LotUsage(BaseModel):
    lot_id: int
    original_nanos: int
    remaining_nanos: int
    used_nanos: int
    used: str
    receipts: list[str] = Field(description="request ids of the receipts that spent this credit")


class RefundOut(BaseModel):
    id: str
    order_id: str
    provider: str
    provider_reference: str | None = Field(description="the order's provider payment reference")
    provider_refund_id: str | None
    bucket: Bucket
    bucket_currency: str
    original_credited_nanos: int
    original_credited: str
    currency: str
    refunded_minor: int
    refunded: str
    refunded_nanos: int
    status: str
    source: str
    actor: str
    reason: str
    time: dt.datetime
    credit_already_used: bool | None
    credit_used_nanos: int | None
    balance_after_nanos: int | None
    balance_after: str | None
    debit_entry: EntryRef | None
    held_nanos: int = Field(
        description="held in the bucket while the provider processed the refund (not spendable)"
    )
    hold_status: str | None = Field(description="pending / settled / released; null if none")
    taken_nanos: int
    debt_nanos: int
    shortfall_nanos: int
    shortfall_state: str
    next_action: str
    decision_reason: str
    idempotency_key: str
    first_seen_at: dt.datetime
    duplicates_suppressed: int
    receipts: list[str]
    recredit_entry: EntryRef | None


class OrderOut(BaseModel):
    id: str
    user_id: int
    status: str
    test_mode: bool
    bucket: Bucket
    bucket_label: str
    bucket_currency: str
    provider: str
    currency: str
    amount_minor: int
    amount: str
    rate: str
    bonus_rate: str
    quoted_nanos: int
    quoted: str
    paid_minor: int | None
    paid_currency: str | None
    credited_nanos: int | None
    credited: str | None
    provider_reference: str | None
    provider_payment_id: str | None
    checkout_url: str | None
    transfer_reference: str | None
    refund_state: str
    dispute_state: str
    refunded_minor: int
    flag: str | None
    flag_detail: str | None
    first_approval: dict[str, Any] | None = Field(
        default=None,
        description="a bank approval waiting for a second, different operator (four eyes)",
    )
    paid_after_expiry: bool
    status_reason: str
    actions: list[str] = Field(description="what the user can still do: pay, submit_transfer")
    expires_at: dt.datetime
    created_at: dt.datetime
    paid_at: dt.datetime | None
    entry: EntryRef | None
    usage: LotUsage | None
    history: list[OrderEvent]
    refunds: list[RefundOut]


class OrderList(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


class TopUpOptions(BaseModel):
    class BucketOption(BaseModel):
        bucket: Bucket
        label: str
        currency: str
        rates: dict[str, str]
        bonus_tiers: list[tuple[str, str]]

    buckets: list[BucketOption]
    providers: list[str]
    test_mode: bool
    min: str
    max: str
    presets: list[str]
    bank_instructions: str


class NextStep(BaseModel):
    label: str
    href: str


class PaymentState(BaseModel):
    """What the return URL shows right after paying (seed 002)."""

    order_id: str
    status: str
    phase: Literal["confirming", "ready", "owed", "failed", "closed", "review"]
    message: str
    test_mode: bool
    bucket: Bucket
    bucket_label: str
    bucket_currency: str
    arrived_nanos: int | None
    arrived: str | None
    debt_repaid_nanos: int
    ready_to_use: bool
    balance_nanos: int
    balance: str
    available_nanos: int
    debt_nanos: int
    route_type: str
    models: list[str] = Field(description="models this bucket pays for")
    entry: EntryRef | None
    receipt_url: str | None
    charge_policy_url: str
    next_steps: list[NextStep]


class Receipt(BaseModel):
    order_id: str
    test_mode: bool
    user_id: int
    provider: str
    provider_reference: str | None
    provider_payment_id: str | None
    paid_at: dt.datetime
    paid: str
    currency: str
    rate: str
    bonus_rate: str
    credited: str
    bucket: Bucket
    bucket_label: str
    bucket_currency: str
    entry: EntryRef | None
    refund_state: str
    refunded: str


class RefundCreate(BaseModel):
    amount: str | None = Field(
        default=None, description="decimal amount in the payment currency; omit for the rest"
    )
    reason: str = Field(min_length=1, max_length=2000)
    mode: Literal["provider", "manual"] = Field(
        default="provider",
        description="provider: through the provider's API; manual: record a refund made "
        "outside Tallygate (no provider call)",
    )
    idempotency_key: str | None = Field(default=None, max_length=150)


class ShortfallDecision(BaseModel):
    decision: Literal["debt", "write_off"]
    reason: str = Field(min_length=1, max_length=2000)


class Review(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class Approve(BaseModel):
    amount: str = Field(description="the amount seen on the bank statement")
    currency: str
    reason: str = Field(min_length=1, max_length=2000)
    override: bool = Field(
        default=False, description="credit the statement amount even if it differs from the order"
    )


class RefundList(BaseModel):
    items: list[RefundOut]
    next_cursor: str | None


class JobOut(BaseModel):
    """A webhook's processing job (docs/decisions/0008-payment-jobs.md)."""

    id: int
    source: str
    event_type: str
    external_id: str = Field(description="the provider's event / notice id")
    status: Literal["queued", "running", "done", "dead"]
    attempts: int
    run_after: dt.datetime = Field(description="not retried before this time (backoff)")
    last_error: str | None
    received_at: dt.datetime


class JobList(BaseModel):
    items: list[JobOut]
