"""Operator adjustments: credit or debit a user's bucket with a mandatory reason.

The ledger entry has kind ``adjustment`` against ``adjust:admin``; its cause is the request it
corrects (``request``, request id) or the adjustment itself (``adjustment``, its key). A credit
opens an ``adjustment`` lot (repaying debt first); a debit takes only available value. The
adjustment row, the entry and the audit event commit together or not at all."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from tallygate.adjustments import repository as repo
from tallygate.adjustments.schemas import AdjustmentCreate, AdjustmentList, AdjustmentOut
from tallygate.audit import service as audit
from tallygate.errors import BadRequest, NotFound
from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import parse_amount, to_decimal_string
from tallygate.ledger import Ledger


class InvalidAdjustment(BadRequest):
    code = "invalid_adjustment"


class ReceiptNotFound(NotFound):
    code = "receipt_not_found"


def _view(m: Mapping[Any, Any], *, operator_view: bool) -> AdjustmentOut:
    amount = int(m["amount_nanos"])
    after = m["balance_after_nanos"]
    return AdjustmentOut(
        id=int(m["id"]),
        user_id=int(m["user_id"]),
        bucket=m["bucket"],
        currency=str(m["currency"]),
        amount_nanos=amount,
        amount=to_decimal_string(amount),
        direction="credit" if amount > 0 else "debit",
        reason=str(m["reason"]),
        request_id=m["request_id"],
        entry_id=int(m["entry_id"]),
        operator=str(m["operator"]) if operator_view else None,
        created_at=from_epoch_us(int(m["created_at"])),
        balance_after_nanos=None if after is None else int(after),
        balance_after=None if after is None else to_decimal_string(int(after)),
    )


def _target(conn: Connection, body: AdjustmentCreate) -> tuple[str, str | None]:
    """(bucket, request id): the receipt, when named, must be this user's."""
    if not repo.user_exists(conn, body.user_id):
        raise NotFound(f"no user with id {body.user_id}", code="user_not_found", param="user_id")
    bucket: str | None = body.bucket
    request_id = body.request_id.strip() if body.request_id else None
    if request_id:
        found = repo.receipt(conn, request_id)
        if found is None or int(found["user_id"]) != body.user_id:
            raise ReceiptNotFound(
                f"user {body.user_id} has no receipt {request_id}", param="request_id"
            )
        bucket = bucket or (str(found["bucket"]) or None)
    if bucket is None:
        raise InvalidAdjustment("bucket is required (credit or routed)", param="bucket")
    return bucket, request_id or None


def create_adjustment(
    conn: Connection, ledger: Ledger, *, body: AdjustmentCreate, operator: str, now_us: int
) -> AdjustmentOut:
    reason = body.reason.strip()
    if not reason:
        raise InvalidAdjustment("a reason is required for every adjustment", param="reason")
    amount = parse_amount(body.amount.strip(), field="amount")
    if amount == 0:
        raise InvalidAdjustment("amount must not be zero", param="amount")
    bucket, request_id = _target(conn, body)
    key = f"adjustment:{body.idempotency_key or uuid.uuid4().hex}"
    # A request is named as on its usage entry (cause ``request``), so one cause lookup finds
    # a request's charge and its corrections together.
    cause = ("request", request_id) if request_id else ("adjustment", key)
    tx = ledger.tx(conn)
    common: dict[str, Any] = {
        "user_id": body.user_id,
        "bucket": bucket,
        "amount_nanos": abs(amount),
        "kind": "adjustment",
        "idempotency_key": key,
        "cause_type": cause[0],
        "cause_id": cause[1],
        "memo": reason,
    }
    if amount > 0:
        entry = ledger.credit(tx, source="adjust:admin", lot_kind="adjustment", **common)
    else:
        entry = ledger.debit(tx, destination="adjust:admin", **common)
    if not entry.replayed:
        repo.insert_adjustment(
            conn,
            user_id=body.user_id,
            bucket=bucket,
            amount_nanos=amount,
            currency=ledger.currencies[bucket],
            reason=reason,
            request_id=request_id,
            idempotency_key=key,
            entry_id=entry.entry_id,
            operator=operator,
            created_at=now_us,
        )
        audit.record(
            tx,
            now_us=now_us,
            actor=operator,
            source="operator",
            action="adjustment.create",
            target=f"user:{body.user_id}:{bucket}",
            after={
                "amount": to_decimal_string(amount),
                "currency": ledger.currencies[bucket],
                "request_id": request_id,
                "entry_id": entry.entry_id,
            },
            reason=reason,
        )
    row = repo.by_key(conn, key)
    assert row is not None
    return _view(row, operator_view=True)


def list_adjustments(
    conn: Connection,
    *,
    user_id: int | None,
    request_id: str | None = None,
    operator_view: bool,
    cursor: int | None = None,
    limit: int = 100,
) -> AdjustmentList:
    rows = repo.page(conn, user_id=user_id, request_id=request_id, after_id=cursor, limit=limit + 1)
    items = [_view(r, operator_view=operator_view) for r in rows[:limit]]
    more = len(rows) > limit
    return AdjustmentList(items=items, next_cursor=str(items[-1].id) if more else None)


def for_receipt(conn: Connection, request_id: str, *, user_id: int) -> AdjustmentList:
    """The adjustments correcting one of the user's receipts (404 if it is not theirs)."""
    found = repo.receipt(conn, request_id)
    if found is None or int(found["user_id"]) != user_id:
        raise ReceiptNotFound(f"no receipt with request id {request_id}")
    return list_adjustments(conn, user_id=user_id, request_id=request_id, operator_view=False)
