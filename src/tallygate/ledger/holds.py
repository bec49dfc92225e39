"""Holds: reserve part of a bucket for an in-flight request, then settle, release or expire it.

A hold is ``pending`` → ``settled`` | ``released`` | ``expired``, exactly once: every resolution
is a conditional UPDATE on ``status = 'pending'``, so a settle racing the expiry sweeper (in any
process) gets exactly one winner. Placing a hold is one conditional UPDATE on the bucket row —
``balance − held ≥ amount`` and no debt — so concurrent requests can never overdraw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tallygate.ledger import entries, key_spend, lots
from tallygate.ledger.accounts import PLATFORM_ACCOUNTS
from tallygate.ledger.entries import Posting
from tallygate.ledger.errors import (
    AccountOwes,
    HoldNotFound,
    HoldNotPending,
    InsufficientBalance,
    InvalidAmount,
    UnknownAccount,
)
from tallygate.ledger.tx import Tx

if TYPE_CHECKING:
    from tallygate.ledger.accounts import UserAccounts


@dataclass(frozen=True, slots=True)
class Hold:
    hold_key: str
    user_id: int
    bucket: str
    currency: str
    amount_nanos: int
    status: str
    expires_at: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Settlement:
    hold_key: str
    charged_nanos: int
    """Taken from the user's bucket (≤ the hold)."""
    overrun_nanos: int
    """Usage beyond the hold, absorbed by the platform's overrun loss account."""
    released_nanos: int
    entry_id: int | None
    balance_after_nanos: int | None
    replayed: bool = False
    recorded: bool = False
    """The caller's ``then`` statement ran in the same statement as the settlement."""


class HoldOps:
    hold_ttl_us: int
    hold_grace_us: int

    # Provided by Ledger.
    def now_us(self) -> int:
        raise NotImplementedError  # noqa: E704

    def user_accounts(self, tx: Tx, user_id: int, bucket: str) -> UserAccounts:
        raise NotImplementedError

    def _by_bucket_id(self, tx: Tx, account_id: int) -> UserAccounts:
        raise NotImplementedError  # noqa: E704

    def platform(self, tx: Tx, name: str, bucket: str) -> tuple[int, str]:
        raise NotImplementedError

    def fresh_accounts(self, tx: Tx, user_id: int, bucket: str) -> UserAccounts:
        raise NotImplementedError

    def place_hold(
        self,
        tx: Tx,
        *,
        user_id: int,
        bucket: str,
        amount_nanos: int,
        hold_key: str,
        ttl_seconds: int | None = None,
        cause_type: str | None = None,
        cause_id: str | None = None,
        key_id: int | None = None,
        commit_ahead: bool = False,
    ) -> Hold:
        """Reserve ``amount_nanos`` of the bucket and earmark the lots it will draw.

        Refused with ``AccountOwes`` while the bucket has debt and ``InsufficientBalance``
        (naming the shortfall) when available < amount. The same key with the same amount
        returns the original hold; with a different amount, HoldNotPending/conflict.

        ``commit_ahead`` (PostgreSQL; the caller writes nothing else in this transaction): the
        hold's one statement may carry its COMMIT (``Tx.one(commit=True)``, decision 0015)."""
        if type(amount_nanos) is not int or amount_nanos <= 0:
            raise InvalidAmount(f"hold amount must be a positive integer, got {amount_nanos!r}")
        ua = self.user_accounts(tx, user_id, bucket)
        now = self.now_us()
        expires = now + (ttl_seconds * 1_000_000 if ttl_seconds is not None else self.hold_ttl_us)
        day = key_spend.utc_day(now)
        if tx.postgres:
            return self._place_hold_pg(
                tx,
                ua,
                hold_key,
                amount_nanos,
                now,
                expires,
                cause_type,
                cause_id,
                key_id,
                day,
                commit_ahead,
            )
        if key_id is not None:
            key_spend.reserve(
                tx,
                key_id=key_id,
                bucket=bucket,
                currency=ua.currency,
                amount=amount_nanos,
                day=day,
                now_us=now,
            )
        # Closes the overdraw race: the check and the reservation are one statement, and on
        # PostgreSQL a concurrent updater re-evaluates the WHERE against the committed row.
        # Every check comes before any lasting write, so a refusal leaves nothing behind.
        reserved = tx.one(
            "UPDATE accounts SET held_nanos = held_nanos + ? WHERE id = ? "
            "AND balance_nanos - held_nanos >= ? "
            "AND NOT EXISTS (SELECT 1 FROM accounts d WHERE d.id = ? AND d.balance_nanos > 0) "
            "RETURNING id",
            (amount_nanos, ua.bucket_id, amount_nanos, ua.debt_id),
        )
        if reserved is None:
            if key_id is not None:
                key_spend.unreserve(tx, key_id=key_id, bucket=bucket, amount=amount_nanos)
            if tx.one("SELECT 1 FROM holds WHERE hold_key = ?", (hold_key,)) is not None:
                return self._replay_hold(tx, hold_key, ua, amount_nanos)
            if self.fresh_accounts(tx, user_id, bucket) != ua:  # a stale cache entry: retry
                return self.place_hold(
                    tx,
                    user_id=user_id,
                    bucket=bucket,
                    amount_nanos=amount_nanos,
                    hold_key=hold_key,
                    ttl_seconds=ttl_seconds,
                    cause_type=cause_type,
                    cause_id=cause_id,
                    key_id=key_id,
                )
            self._refuse(tx, ua, amount_nanos)
        draws = lots.plan(lots.free_lots(tx, ua.bucket_id), amount_nanos)
        row = tx.one(
            "INSERT INTO holds (hold_key, account_id, amount_nanos, status, earmarks, created_at, "
            "expires_at, cause_type, cause_id, key_id, spend_day) "
            "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (hold_key) DO NOTHING RETURNING id",
            (
                hold_key,
                ua.bucket_id,
                amount_nanos,
                lots.encode_earmarks(draws),
                now,
                expires,
                cause_type,
                cause_id,
                key_id,
                day,
            ),
        )
        if row is None:  # the key exists: undo our reservations (we still hold the locks)
            tx.run(
                "UPDATE accounts SET held_nanos = held_nanos - ? WHERE id = ?",
                (amount_nanos, ua.bucket_id),
            )
            if key_id is not None:
                key_spend.unreserve(tx, key_id=key_id, bucket=bucket, amount=amount_nanos)
            return self._replay_hold(tx, hold_key, ua, amount_nanos)
        lots.earmark(tx, draws)
        return Hold(hold_key, user_id, bucket, ua.currency, amount_nanos, "pending", expires)

    place_hold.relaxed_commit = True  # type: ignore[attr-defined]  # see ledger.executor

    def _place_hold_pg(
        self,
        tx: Tx,
        ua: UserAccounts,
        hold_key: str,
        amount: int,
        now: int,
        expires: int,
        cause_type: str | None,
        cause_id: str | None,
        key_id: int | None,
        day: int,
        commit_ahead: bool = False,
    ) -> Hold:
        """PostgreSQL: the same steps as the SQLite path, as one server-side function call
        (migrations 0002/0004) — one round trip instead of five. Every later statement here
        only reads (a replay, a refusal's details) or retries the whole hold, so the function
        call may carry the transaction's COMMIT (``commit_ahead``)."""
        row = tx.one(
            "SELECT * FROM tg_place_hold(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ua.bucket_id,
                ua.debt_id,
                hold_key,
                amount,
                now,
                expires,
                cause_type,
                cause_id,
                key_id,
                day,
            ),
            commit=commit_ahead,
        )
        assert row is not None
        outcome = row[0]
        if outcome == "ok":
            return Hold(hold_key, ua.user_id, ua.bucket, ua.currency, amount, "pending", expires)
        if outcome == "replay":
            return self._replay_hold(tx, hold_key, ua, amount)
        if self.fresh_accounts(tx, ua.user_id, ua.bucket) != ua:  # a stale cache entry: retry
            return self._place_hold_pg(
                tx,
                self.user_accounts(tx, ua.user_id, ua.bucket),
                hold_key,
                amount,
                now,
                expires,
                cause_type,
                cause_id,
                key_id,
                day,
                commit_ahead,
            )
        if outcome == "key_refused":
            assert key_id is not None
            key_spend.refuse(
                tx,
                key_id=key_id,
                bucket=ua.bucket,
                currency=ua.currency,
                amount=amount,
                day=day,
                now_us=now,
            )
        balance, held, debt = int(row[1]), int(row[2]), int(row[4])
        if debt > 0:
            raise AccountOwes(ua.bucket, ua.currency, debt)
        raise InsufficientBalance(ua.bucket, ua.currency, amount - (balance - held), balance - held)

    def _refuse(self, tx: Tx, ua: UserAccounts, amount: int) -> None:
        row = tx.all(
            "SELECT id, balance_nanos, held_nanos FROM accounts WHERE id IN (?, ?)",
            (ua.bucket_id, ua.debt_id),
        )
        by_id = {int(r[0]): (int(r[1]), int(r[2])) for r in row}
        debt = by_id[ua.debt_id][0]
        if debt > 0:
            raise AccountOwes(ua.bucket, ua.currency, debt)
        balance, held = by_id[ua.bucket_id]
        raise InsufficientBalance(ua.bucket, ua.currency, amount - (balance - held), balance - held)

    def _replay_hold(self, tx: Tx, hold_key: str, ua: UserAccounts, amount: int) -> Hold:
        row = tx.one(
            "SELECT account_id, amount_nanos, status, expires_at FROM holds WHERE hold_key = ?",
            (hold_key,),
        )
        assert row is not None
        if int(row[0]) != ua.bucket_id or int(row[1]) != amount:
            from tallygate.errors import IdempotencyConflict

            raise IdempotencyConflict(
                f"hold key {hold_key!r} was already used for a different account or amount",
                details={
                    "differs": [
                        n
                        for n, same in (
                            ("account", int(row[0]) == ua.bucket_id),
                            ("amount", int(row[1]) == amount),
                        )
                        if not same
                    ]
                },
            )
        return Hold(
            hold_key,
            ua.user_id,
            ua.bucket,
            ua.currency,
            amount,
            str(row[2]),
            int(row[3]),
            replayed=True,
        )

    def settle_hold(
        self,
        tx: Tx,
        *,
        hold_key: str,
        actual_nanos: int,
        kind: str = "usage",
        revenue: str = "revenue:usage",
        cause_type: str | None = None,
        cause_id: str | None = None,
        memo: str = "",
        then: tuple[str, Sequence[Any]] | None = None,
        commit_ahead: bool = False,
    ) -> Settlement:
        """Charge the actual cost, release the rest — one transaction, one ``usage`` entry.

        The charge draws from the lots the hold earmarked, even a lot that expired meanwhile.
        Usage beyond the hold is charged at the hold; the excess goes to ``loss:overrun``.

        ``then``: on PostgreSQL, a data-modifying statement over the settlement row ``s``
        (columns ``outcome, charged, overrun, released, o_entry, balance_after``; it must only
        act ``WHERE s.outcome = 'ok'``) sent in the same statement as ``tg_settle_hold`` — one
        round trip instead of two (the gateway's receipt, decision 0007). ``recorded`` on the
        result says whether it ran; elsewhere (SQLite, or a replayed settlement) it did not
        and the caller runs its own statement.

        ``commit_ahead`` (PostgreSQL; the caller writes nothing else in this transaction but
        the receipt of a replayed settlement, itself one statement): the settlement's one
        statement may carry its COMMIT (``Tx.one(commit=True)``, decision 0015)."""
        if type(actual_nanos) is not int or actual_nanos < 0:
            raise InvalidAmount(
                f"actual amount must be a non-negative integer, got {actual_nanos!r}"
            )
        if revenue not in PLATFORM_ACCOUNTS:
            raise UnknownAccount(f"unknown platform account {revenue!r}")
        now = self.now_us()
        if tx.postgres:
            return self._settle_pg(
                tx,
                hold_key,
                actual_nanos,
                now,
                kind,
                revenue,
                cause_type,
                cause_id,
                memo,
                then,
                commit_ahead,
            )
        row = tx.one(
            "UPDATE holds SET status = 'settled', resolved_at = ?, "
            "settled_nanos = CASE WHEN ? > amount_nanos THEN amount_nanos ELSE ? END, "
            "overrun_nanos = CASE WHEN ? > amount_nanos THEN ? - amount_nanos ELSE 0 END "
            "WHERE hold_key = ? AND status = 'pending' "
            "RETURNING account_id, amount_nanos, earmarks, settled_nanos, overrun_nanos, "
            "key_id, spend_day",
            (now, actual_nanos, actual_nanos, actual_nanos, actual_nanos, hold_key),
        )
        if row is None:
            return self._settled_already(tx, hold_key, actual_nanos)
        account_id, amount, earmarks = int(row[0]), int(row[1]), str(row[2])
        charge, overrun = int(row[3]), int(row[4])
        ua = self._by_bucket_id(tx, account_id)
        if row[5] is not None:
            key_spend.resolve(
                tx,
                key_id=int(row[5]),
                bucket=ua.bucket,
                amount=amount,
                charged=charge,
                spend_day=int(row[6]),
            )
        after = tx.one(
            "UPDATE accounts SET balance_nanos = balance_nanos - ?, held_nanos = held_nanos - ? "
            "WHERE id = ? RETURNING balance_nanos",
            (charge, amount, account_id),
        )
        assert after is not None
        balance_after = int(after[0])
        postings: list[Posting] = []
        left = charge
        running = balance_after + charge
        for lot_id, reserved in lots.decode_earmarks(earmarks):
            draw = min(reserved, left)
            left -= draw
            tx.run(
                "UPDATE lots SET remaining_nanos = remaining_nanos - ?, "
                "earmarked_nanos = earmarked_nanos - ? WHERE id = ?",
                (draw, reserved, lot_id),
            )
            if draw:
                running -= draw
                postings.append(Posting(account_id, -draw, ua.currency, lot_id, running))
        entry_id = None
        if charge or overrun:
            revenue_id, revenue_currency = self.platform(tx, revenue, ua.bucket)
            postings.append(Posting(revenue_id, charge + overrun, revenue_currency))
            if overrun:
                loss_id, loss_currency = self.platform(tx, "loss:overrun", ua.bucket)
                postings.append(Posting(loss_id, -overrun, loss_currency))
            entry_id = entries.claim(
                tx,
                kind=kind,
                key=f"settle:{hold_key}",
                request=None,
                cause_type=cause_type or "hold",
                cause_id=cause_id or hold_key,
                memo=memo,
                now_us=now,
            )
            assert entry_id is not None
            entries.write_postings(tx, entry_id, postings)
        return Settlement(hold_key, charge, overrun, amount - charge, entry_id, balance_after)

    def _settle_pg(
        self,
        tx: Tx,
        hold_key: str,
        actual: int,
        now: int,
        kind: str,
        revenue: str,
        cause_type: str | None,
        cause_id: str | None,
        memo: str,
        then: tuple[str, Sequence[Any]] | None = None,
        commit_ahead: bool = False,
    ) -> Settlement:
        params: tuple[Any, ...] = (hold_key, actual, now, kind, revenue, cause_type, cause_id, memo)
        if then is None:
            row = tx.one(
                "SELECT * FROM tg_settle_hold(?, ?, ?, ?, ?, ?, ?, ?)", params, commit=commit_ahead
            )
        else:
            row = tx.one(
                "WITH s AS MATERIALIZED (SELECT * FROM tg_settle_hold(?, ?, ?, ?, ?, ?, ?, ?)), "
                f"t AS ({then[0]}) "
                "SELECT outcome, charged, overrun, released, o_entry, balance_after FROM s",
                (*params, *then[1]),
                commit=commit_ahead,
            )
        assert row is not None
        if row[0] != "ok":
            return self._settled_already(tx, hold_key, actual)
        tx.point("after_postings_before_commit")
        return Settlement(
            hold_key,
            int(row[1]),
            int(row[2]),
            int(row[3]),
            int(row[4]) if row[4] is not None else None,
            int(row[5]),
            recorded=then is not None,
        )

    def _settled_already(self, tx: Tx, hold_key: str, actual: int) -> Settlement:
        row = tx.one(
            "SELECT status, amount_nanos, settled_nanos, overrun_nanos, account_id "
            "FROM holds WHERE hold_key = ?",
            (hold_key,),
        )
        if row is None:
            raise HoldNotFound(f"no hold with key {hold_key!r}")
        status, amount = str(row[0]), int(row[1])
        if status != "settled" or int(row[2]) + int(row[3]) != actual:
            raise HoldNotPending(hold_key, status)
        entry = tx.one("SELECT id FROM entries WHERE idempotency_key = ?", (f"settle:{hold_key}",))
        balance = (
            tx.one(
                "SELECT balance_after_nanos FROM postings WHERE entry_id = ? "
                "AND account_id = ? ORDER BY id DESC LIMIT 1",
                (entry[0], row[4]),
            )
            if entry
            else None
        )
        return Settlement(
            hold_key,
            int(row[2]),
            int(row[3]),
            amount - int(row[2]),
            int(entry[0]) if entry else None,
            int(balance[0]) if balance else None,
            replayed=True,
        )

    def release_hold(self, tx: Tx, *, hold_key: str) -> Hold:
        """Give the whole hold back (failure before any billable output). Idempotent."""
        return self._unhold(tx, hold_key, "released", self.now_us())

    def _unhold(
        self, tx: Tx, hold_key: str, status: str, now: int, due_before: int | None = None
    ) -> Hold:
        guard = " AND expires_at <= ?" if due_before is not None else ""
        params: tuple[object, ...] = (status, now, hold_key)
        if due_before is not None:
            params += (due_before,)
        row = tx.one(
            f"UPDATE holds SET status = ?, resolved_at = ? WHERE hold_key = ? "
            f"AND status = 'pending'{guard} RETURNING account_id, amount_nanos, earmarks, "
            "expires_at, key_id, spend_day",
            params,
        )
        if row is None:
            found = tx.one(
                "SELECT status, account_id, amount_nanos, expires_at FROM holds WHERE hold_key = ?",
                (hold_key,),
            )
            if found is None:
                raise HoldNotFound(f"no hold with key {hold_key!r}")
            if str(found[0]) != status:
                raise HoldNotPending(hold_key, str(found[0]))
            ua = self._by_bucket_id(tx, int(found[1]))
            return Hold(
                hold_key,
                ua.user_id,
                ua.bucket,
                ua.currency,
                int(found[2]),
                status,
                int(found[3]),
                replayed=True,
            )
        account_id, amount = int(row[0]), int(row[1])
        if row[4] is not None:
            ua_key = self._by_bucket_id(tx, account_id)
            key_spend.resolve(
                tx,
                key_id=int(row[4]),
                bucket=ua_key.bucket,
                amount=amount,
                charged=0,
                spend_day=int(row[5]),
            )
        tx.run("UPDATE accounts SET held_nanos = held_nanos - ? WHERE id = ?", (amount, account_id))
        for lot_id, reserved in lots.decode_earmarks(str(row[2])):
            tx.run(
                "UPDATE lots SET earmarked_nanos = earmarked_nanos - ? WHERE id = ?",
                (reserved, lot_id),
            )
        ua = self._by_bucket_id(tx, account_id)
        return Hold(hold_key, ua.user_id, ua.bucket, ua.currency, amount, status, int(row[3]))

    def expire_holds(self, tx: Tx, *, limit: int = 500) -> int:
        """The sweeper: expire pending holds past their TTL plus the grace period.

        Safe in many processes at once and against concurrent settles, without deadlocks: it
        first claims every due hold in one statement (on PostgreSQL skipping holds another
        transaction has locked — a settle in progress — which the next sweep revisits), and
        only then touches key counters, accounts and lots, each set in ascending id order.
        A single settle takes one hold, one key row, one account, then its lots, so no cycle
        can form. Returns the number of holds expired."""
        now = self.now_us()
        cutoff = now - self.hold_grace_us
        skip = " FOR UPDATE SKIP LOCKED" if tx.postgres else ""
        claimed = tx.all(
            "UPDATE holds SET status = 'expired', resolved_at = ? WHERE id IN ("
            "SELECT id FROM holds WHERE status = 'pending' AND expires_at <= ? "
            f"ORDER BY id LIMIT ?{skip}) "
            "RETURNING account_id, amount_nanos, earmarks, key_id, spend_day",
            (now, cutoff, limit),
        )
        if not claimed:
            return 0
        keys: dict[tuple[int, str, int], int] = {}
        held: dict[int, int] = {}
        marks: dict[int, int] = {}
        for account_id, amount, earmarks, key_id, spend_day in claimed:
            ua = self._by_bucket_id(tx, int(account_id))
            if key_id is not None:
                slot = (int(key_id), ua.bucket, int(spend_day))
                keys[slot] = keys.get(slot, 0) + int(amount)
            held[int(account_id)] = held.get(int(account_id), 0) + int(amount)
            for lot_id, reserved in lots.decode_earmarks(str(earmarks)):
                marks[lot_id] = marks.get(lot_id, 0) + reserved
        for (key_id, bucket, spend_day), amount in sorted(keys.items()):
            key_spend.resolve(
                tx, key_id=key_id, bucket=bucket, amount=amount, charged=0, spend_day=spend_day
            )
        for account_id, amount in sorted(held.items()):
            tx.run(
                "UPDATE accounts SET held_nanos = held_nanos - ? WHERE id = ?", (amount, account_id)
            )
        for lot_id, amount in sorted(marks.items()):
            tx.run(
                "UPDATE lots SET earmarked_nanos = earmarked_nanos - ? WHERE id = ?",
                (amount, lot_id),
            )
        return len(claimed)
