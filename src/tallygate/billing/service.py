"""The billing of one request, as two ledger calls run by the group-commit executor:

- ``begin``: (idempotency check) → hold the worst case on the route's bucket, with the key's
  spend limits, revocation and expiry checked inside the same transaction;
- ``finish``: settle the actual charge (or release) + write the receipt (+ store the response
  for an idempotent replay) — one transaction, so receipt and entry always agree.

A refused ``begin`` raises a ledger error having written nothing (the executor's contract)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tallygate.billing import receipts
from tallygate.billing.receipts import Receipt
from tallygate.ledger import Ledger
from tallygate.ledger.holds import Hold
from tallygate.ledger.tx import Tx


@dataclass(frozen=True, slots=True)
class Replay:
    """An earlier request with the same Idempotency-Key."""

    request_id: str
    status: str  # pending | done
    same_body: bool
    response_status: int | None
    response_body: str | None


@dataclass(frozen=True, slots=True)
class Begun:
    hold: Hold | None
    replay: Replay | None


@dataclass(frozen=True, slots=True)
class Finished:
    charged_nanos: int
    overrun_nanos: int
    balance_after_nanos: int | None
    entry_id: int | None
    body: bytes | None


def _find_replay(tx: Tx, key_id: int, idem_key: str, request_hash: str) -> Replay | None:
    row = tx.one(
        "SELECT request_id, status, request_hash, response_status, response_body "
        "FROM request_idempotency WHERE key_id = ? AND idem_key = ?",
        (key_id, idem_key),
    )
    if row is None:
        return None
    return Replay(str(row[0]), str(row[1]), str(row[2]) == request_hash, row[3], row[4])


def begin(
    tx: Tx,
    ledger: Ledger,
    *,
    request_id: str,
    user_id: int,
    bucket: str,
    amount: int,
    key_id: int,
    idem_key: str | None,
    request_hash: str,
    now_us: int,
) -> Begun:
    if idem_key:
        replay = _find_replay(tx, key_id, idem_key, request_hash)
        if replay is not None:
            return Begun(None, replay)
    hold = ledger.place_hold(
        tx,
        user_id=user_id,
        bucket=bucket,
        amount_nanos=amount,
        hold_key=request_id,
        key_id=key_id,
        cause_type="request",
        cause_id=request_id,
        # Nothing else is written with the hold: its statement may carry the COMMIT (0015).
        commit_ahead=not idem_key,
    )
    if idem_key:
        claimed = tx.one(
            "INSERT INTO request_idempotency (key_id, idem_key, request_hash, request_id, status, "
            "created_at) VALUES (?, ?, ?, ?, 'pending', ?) "
            "ON CONFLICT (key_id, idem_key) DO NOTHING RETURNING id",
            (key_id, idem_key, request_hash, request_id, now_us),
        )
        if claimed is None:  # a concurrent request with the same key won: give our hold back
            ledger.release_hold(tx, hold_key=request_id)
            return Begun(None, _find_replay(tx, key_id, idem_key, request_hash))
    return Begun(hold, None)


begin.relaxed_commit = True  # type: ignore[attr-defined]  # a reservation: see ledger.executor


def finish(
    tx: Tx,
    ledger: Ledger,
    *,
    receipt: Receipt,
    charge: int | None,
    render: Callable[[Finished], bytes] | None = None,
    idem_key: str | None = None,
) -> Finished:
    """Settle ``charge`` (None: release the hold) and write the receipt, atomically."""
    entry_id = None
    charged = overrun = 0
    recorded = False
    balance_after: int | None
    body: bytes | None = None
    expected = -1
    if render is not None and charge is not None and tx.postgres and not idem_key:
        # The settlement below may commit together with its statement (commit_ahead): render
        # first, from the charge it will make (the hold caps it), so that a body which cannot
        # be rendered fails the call before anything is written, as it always did.
        expected = min(charge, receipt.hold_nanos)
        body = render(Finished(expected, 0, None, None, None))
    if charge is None:
        ledger.release_hold(tx, hold_key=receipt.request_id)
        balance_after = ledger.balance(tx, receipt.user_id, receipt.bucket).balance_nanos
    else:
        settled = ledger.settle_hold(
            tx,
            hold_key=receipt.request_id,
            actual_nanos=charge,
            cause_type="request",
            cause_id=receipt.request_id,
            memo=receipt.model,
            # PostgreSQL: the receipt is written by the settlement's own statement.
            then=receipts.from_settlement(receipt) if tx.postgres else None,
            # Without an Idempotency-Key nothing else is written here (a replayed settlement's
            # receipt is one statement of its own): the statement may carry the COMMIT (0015).
            commit_ahead=not idem_key,
        )
        entry_id, charged, overrun = settled.entry_id, settled.charged_nanos, settled.overrun_nanos
        balance_after = settled.balance_after_nanos
        recorded = settled.recorded
    receipt.entry_id = entry_id
    receipt.charge_nanos = charged
    receipt.overrun_nanos = overrun
    receipt.balance_after_nanos = balance_after
    if not recorded:
        receipts.insert(tx, receipt)
    done = Finished(charged, overrun, balance_after, entry_id, None)
    if render is not None:
        if body is None or charged != expected:
            body = render(done)
        done = Finished(charged, overrun, balance_after, entry_id, body)
    if idem_key and receipt.key_id is not None and receipt.status == "failed":
        # Nothing was charged: forget the key so a retry is served afresh.
        tx.run(
            "DELETE FROM request_idempotency WHERE key_id = ? AND idem_key = ?",
            (receipt.key_id, idem_key),
        )
    elif idem_key and receipt.key_id is not None:
        tx.run(
            "UPDATE request_idempotency SET status = 'done', response_status = ?, "
            "response_body = ? WHERE key_id = ? AND idem_key = ?",
            (
                receipt.http_status,
                done.body.decode() if done.body is not None else None,
                receipt.key_id,
                idem_key,
            ),
        )
    return done


def reject(tx: Tx, *, receipt: Receipt) -> None:
    """The failed-request record of a request refused before any hold or upstream call."""
    receipts.insert(tx, receipt)
