"""The ledger's operations: the only code that writes postings.

Locks are taken in one fixed order — hold row, then bucket account, then debt account, then
lots — so concurrent operations on PostgreSQL cannot deadlock; SQLite serialises writers with
``BEGIN IMMEDIATE``. Every operation is idempotent under its key (an entry's idempotency key or
a hold's key) and refuses bad input before writing anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tallygate.kit.clock import Clock, SystemClock, to_epoch_us
from tallygate.kit.money import MAX_NANOS
from tallygate.ledger import accounts as acc
from tallygate.ledger import entries, lots
from tallygate.ledger.accounts import BUCKETS, UserAccounts
from tallygate.ledger.entries import PostedEntry, Posting
from tallygate.ledger.errors import (
    CurrencyMismatch,
    InsufficientBalance,
    InvalidAmount,
    UnknownAccount,
)
from tallygate.ledger.holds import HoldOps
from tallygate.ledger.tx import Tx, from_connection

__all__ = ["BUCKETS", "Balance", "Ledger"]

LOT_KINDS = ("paid", "promo", "adjustment")


@dataclass(frozen=True, slots=True)
class Balance:
    user_id: int
    bucket: str
    currency: str
    balance_nanos: int
    """Σ postings on the bucket account (= Σ lot remainders)."""
    held_nanos: int
    """Reserved by pending holds."""
    debt_nanos: int
    """Owed on this bucket after a reversal hit money already spent; blocks new holds."""

    @property
    def available_nanos(self) -> int:
        return self.balance_nanos - self.held_nanos


def check_amount(amount: Any, *, field: str = "amount") -> int:
    if type(amount) is not int:
        raise InvalidAmount(
            f"{field} must be an integer number of nano-units, got {amount!r}", param=field
        )
    if amount <= 0:
        raise InvalidAmount(f"{field} must be positive, got {amount}", param=field)
    if amount > MAX_NANOS:
        raise InvalidAmount(f"{field} is out of range", param=field)
    return amount


class Ledger(HoldOps):
    """Configuration and id caches for ledger operations; one per process.

    Account ids never change once committed, so the caches hold only ids read back from the
    database, never ids created in a transaction that might still roll back."""

    def __init__(
        self,
        currencies: dict[str, str],
        *,
        clock: Clock | None = None,
        hold_ttl_seconds: int = 600,
        hold_grace_seconds: int = 60,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        missing = [b for b in BUCKETS if b not in currencies]
        if missing:
            raise ValueError(f"no currency configured for bucket(s) {missing}")
        self.currencies = {b: currencies[b].upper() for b in BUCKETS}
        self.clock: Clock = clock or SystemClock()
        self.hold_ttl_us = hold_ttl_seconds * 1_000_000
        self.hold_grace_us = hold_grace_seconds * 1_000_000
        self.fault = fault
        self._users: dict[tuple[int, str], UserAccounts] = {}
        self._by_id: dict[int, UserAccounts] = {}
        self._platform: dict[tuple[str, str], tuple[int, str]] = {}

    def now_us(self) -> int:
        return to_epoch_us(self.clock.now())

    def tx(self, conn: Any) -> Tx:
        """Wrap a SQLAlchemy ``Connection`` (inside its transaction) for ledger calls."""
        return from_connection(conn, fault=self.fault)

    # ---- accounts -------------------------------------------------------------------------

    def bootstrap(self, tx: Tx) -> None:
        """Create platform accounts and refuse a bucket currency change once money moved."""
        used = acc.bucket_currencies_in_use(tx)
        for bucket, currency in self.currencies.items():
            other = used.get(bucket, set()) - {currency}
            if other:
                raise CurrencyMismatch(
                    f"bucket {bucket} already holds postings in {', '.join(sorted(other))}; "
                    f"its currency cannot change to {currency}"
                )
        acc.ensure_platform_accounts(tx, self.currencies, self.now_us())

    def open_user(self, tx: Tx, user_id: int) -> None:
        acc.ensure_user_accounts(tx, user_id, self.currencies, self.now_us())

    def user_accounts(self, tx: Tx, user_id: int, bucket: str) -> UserAccounts:
        found = self._users.get((user_id, bucket))
        if found is None:
            found = acc.load_user_accounts(tx, user_id, bucket)
            self._users[(user_id, bucket)] = found
            self._by_id[found.bucket_id] = found
        return found

    def fresh_accounts(self, tx: Tx, user_id: int, bucket: str) -> UserAccounts:
        """The user's accounts read from the database now (refreshing the cache). Used by the
        less frequent operations, so a cache entry from a rolled-back transaction can never
        steer money; the hot hold path verifies its cached ids when a hold is refused."""
        found = acc.load_user_accounts(tx, user_id, bucket)
        self._users[(user_id, bucket)] = found
        self._by_id[found.bucket_id] = found
        return found

    def _by_bucket_id(self, tx: Tx, account_id: int) -> UserAccounts:
        found = self._by_id.get(account_id)
        if found is None:
            row = tx.one("SELECT user_id, bucket FROM accounts WHERE id = ?", (account_id,))
            if row is None:
                raise UnknownAccount(f"unknown account id {account_id}")
            found = self.user_accounts(tx, int(row[0]), str(row[1]))
        return found

    def platform(self, tx: Tx, name: str, bucket: str) -> tuple[int, str]:
        found = self._platform.get((name, bucket))
        if found is None:
            found = self._platform[(name, bucket)] = acc.load_platform_account(tx, name, bucket)
        return found

    def balance(self, tx: Tx, user_id: int, bucket: str) -> Balance:
        ua = self.fresh_accounts(tx, user_id, bucket)
        rows = dict(
            (int(r[0]), (int(r[1]), int(r[2])))
            for r in tx.all(
                "SELECT id, balance_nanos, held_nanos FROM accounts WHERE id IN (?, ?)",
                (ua.bucket_id, ua.debt_id),
            )
        )
        balance, held = rows[ua.bucket_id]
        return Balance(user_id, bucket, ua.currency, balance, held, rows[ua.debt_id][0])

    def _lock_bucket(self, tx: Tx, ua: UserAccounts) -> tuple[int, int]:
        row = tx.one(
            "SELECT balance_nanos, held_nanos FROM accounts WHERE id = ?" + tx.for_update,
            (ua.bucket_id,),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def _lock_debt(self, tx: Tx, ua: UserAccounts) -> int:
        row = tx.one(
            "SELECT balance_nanos FROM accounts WHERE id = ?" + tx.for_update, (ua.debt_id,)
        )
        assert row is not None
        return int(row[0])

    def _move(self, tx: Tx, account_id: int, delta: int) -> int:
        """Apply ``delta`` to a user account's cached balance; returns the new balance."""
        row = tx.one(
            "UPDATE accounts SET balance_nanos = balance_nanos + ? WHERE id = ? "
            "RETURNING balance_nanos",
            (delta, account_id),
        )
        assert row is not None
        return int(row[0])

    # ---- money in -------------------------------------------------------------------------

    def credit(
        self,
        tx: Tx,
        *,
        user_id: int,
        bucket: str,
        amount_nanos: int,
        kind: str,
        source: str,
        idempotency_key: str,
        lot_kind: str = "paid",
        lot_priority: int = 100,
        lot_expires_at: int | None = None,
        cause_type: str | None = None,
        cause_id: str | None = None,
        memo: str = "",
    ) -> PostedEntry:
        """Credit a user's bucket from a platform account, opening a lot.

        Any debt on the bucket is repaid first; only the rest lands in the bucket (and its lot).
        ``extra`` holds ``lot_id`` (None when all of it repaid debt) and ``debt_repaid_nanos``."""
        check_amount(amount_nanos)
        if lot_kind not in LOT_KINDS:
            raise InvalidAmount(f"lot kind must be one of {LOT_KINDS}", param="lot_kind")
        ua = self.fresh_accounts(tx, user_id, bucket)
        source_id, source_currency = self.platform(tx, source, bucket)
        request = {
            "op": "credit",
            "user_id": user_id,
            "bucket": bucket,
            "amount": amount_nanos,
            "kind": kind,
            "source": source,
            "lot_kind": lot_kind,
            "lot_priority": lot_priority,
            "lot_expires_at": lot_expires_at,
            "cause_type": cause_type,
            "cause_id": cause_id,
        }
        now = self.now_us()
        entry_id = entries.claim(
            tx,
            kind=kind,
            key=idempotency_key,
            request=request,
            cause_type=cause_type,
            cause_id=cause_id,
            memo=memo,
            now_us=now,
        )
        if entry_id is None:
            return self._replay(tx, idempotency_key, ua)
        self._lock_bucket(tx, ua)
        debt = self._lock_debt(tx, ua)
        repay = min(debt, amount_nanos)
        rest = amount_nanos - repay
        postings = [Posting(source_id, -amount_nanos, source_currency)]
        lot_id: int | None = None
        if repay:
            postings.append(
                Posting(ua.debt_id, repay, ua.currency, None, self._move(tx, ua.debt_id, -repay))
            )
        if rest:
            lot_id = lots.open_lot(
                tx,
                account_id=ua.bucket_id,
                entry_id=entry_id,
                kind=lot_kind,
                amount=rest,
                priority=lot_priority,
                expires_at=lot_expires_at,
                now_us=now,
            )
            postings.append(
                Posting(ua.bucket_id, rest, ua.currency, lot_id, self._move(tx, ua.bucket_id, rest))
            )
        entries.write_postings(tx, entry_id, postings)
        return PostedEntry(
            entry_id, kind, False, postings, {"lot_id": lot_id, "debt_repaid_nanos": repay}
        )

    # ---- money out ------------------------------------------------------------------------

    def debit(
        self,
        tx: Tx,
        *,
        user_id: int,
        bucket: str,
        amount_nanos: int,
        kind: str,
        destination: str,
        idempotency_key: str,
        cause_type: str | None = None,
        cause_id: str | None = None,
        memo: str = "",
    ) -> PostedEntry:
        """Take value that is available now (balance − holds) from a bucket, drawing lots in
        order. Refused with InsufficientBalance when the bucket cannot cover it."""
        check_amount(amount_nanos)
        ua = self.fresh_accounts(tx, user_id, bucket)
        dest_id, dest_currency = self.platform(tx, destination, bucket)
        request = {
            "op": "debit",
            "user_id": user_id,
            "bucket": bucket,
            "amount": amount_nanos,
            "kind": kind,
            "destination": destination,
            "cause_type": cause_type,
            "cause_id": cause_id,
        }
        # Check before writing anything: a refusal must leave no entry header behind. A replay
        # of an earlier successful debit is recognised even if the balance is now too low.
        balance, held = self._lock_bucket(tx, ua)
        if balance - held < amount_nanos and not entries.exists(tx, idempotency_key):
            raise InsufficientBalance(
                bucket, ua.currency, amount_nanos - (balance - held), balance - held
            )
        entry_id = entries.claim(
            tx,
            kind=kind,
            key=idempotency_key,
            request=request,
            cause_type=cause_type,
            cause_id=cause_id,
            memo=memo,
            now_us=self.now_us(),
        )
        if entry_id is None:
            return self._replay(tx, idempotency_key, ua)
        draws = lots.plan(lots.free_lots(tx, ua.bucket_id), amount_nanos)
        postings = self._draw(tx, ua, draws)
        postings.append(Posting(dest_id, amount_nanos, dest_currency))
        entries.write_postings(tx, entry_id, postings)
        return PostedEntry(entry_id, kind, False, postings, {"taken_nanos": amount_nanos})

    def reverse(
        self,
        tx: Tx,
        *,
        user_id: int,
        bucket: str,
        amount_nanos: int,
        kind: str,
        destination: str,
        idempotency_key: str,
        lot_id: int | None = None,
        cause_type: str | None = None,
        cause_id: str | None = None,
        memo: str = "",
    ) -> PostedEntry:
        """Take back value that may already be spent (refunds, disputes).

        Takes what is available (``lot_id`` first, then the other lots in draw order); whatever
        the bucket cannot cover is booked as debt, which blocks new holds until repaid. Money
        reserved by pending holds is never taken: those requests settle normally.
        ``extra`` holds ``taken_nanos`` and ``debt_booked_nanos``."""
        check_amount(amount_nanos)
        ua = self.fresh_accounts(tx, user_id, bucket)
        dest_id, dest_currency = self.platform(tx, destination, bucket)
        request = {
            "op": "reverse",
            "user_id": user_id,
            "bucket": bucket,
            "amount": amount_nanos,
            "kind": kind,
            "destination": destination,
            "lot_id": lot_id,
            "cause_type": cause_type,
            "cause_id": cause_id,
        }
        entry_id = entries.claim(
            tx,
            kind=kind,
            key=idempotency_key,
            request=request,
            cause_type=cause_type,
            cause_id=cause_id,
            memo=memo,
            now_us=self.now_us(),
        )
        if entry_id is None:
            return self._replay(tx, idempotency_key, ua)
        balance, held = self._lock_bucket(tx, ua)
        self._lock_debt(tx, ua)
        take = min(amount_nanos, balance - held)
        postings = self._draw(tx, ua, lots.plan(lots.free_lots(tx, ua.bucket_id), take, lot_id))
        short = amount_nanos - take
        if short:
            postings.append(
                Posting(ua.debt_id, -short, ua.currency, None, self._move(tx, ua.debt_id, short))
            )
        postings.append(Posting(dest_id, amount_nanos, dest_currency))
        entries.write_postings(tx, entry_id, postings)
        return PostedEntry(
            entry_id, kind, False, postings, {"taken_nanos": take, "debt_booked_nanos": short}
        )

    def _draw(self, tx: Tx, ua: UserAccounts, draws: list[lots.Draw]) -> list[Posting]:
        lots.take_free(tx, draws)
        postings = []
        for lot_id, amount in draws:
            postings.append(
                Posting(
                    ua.bucket_id,
                    -amount,
                    ua.currency,
                    lot_id,
                    self._move(tx, ua.bucket_id, -amount),
                )
            )
        return postings

    def _replay(self, tx: Tx, key: str, ua: UserAccounts) -> PostedEntry:
        entry = entries.load(tx, key)
        bucket_postings = [p for p in entry.postings if p.account_id == ua.bucket_id]
        debt_postings = [p for p in entry.postings if p.account_id == ua.debt_id]
        opened = [p.lot_id for p in bucket_postings if p.amount_nanos > 0]
        entry.extra = {
            "lot_id": opened[0] if opened else None,
            "debt_repaid_nanos": sum(p.amount_nanos for p in debt_postings if p.amount_nanos > 0),
            "debt_booked_nanos": -sum(p.amount_nanos for p in debt_postings if p.amount_nanos < 0),
            "taken_nanos": -sum(p.amount_nanos for p in bucket_postings if p.amount_nanos < 0),
        }
        return entry

    # ---- platform-only transfers ----------------------------------------------------------

    def transfer(
        self,
        tx: Tx,
        *,
        legs: list[tuple[str, str, int, str]],
        kind: str,
        idempotency_key: str,
        memo: str = "",
    ) -> PostedEntry:
        """Post an entry between platform accounts: legs are (name, bucket, amount, currency).

        User buckets are moved only by credit/debit/reverse/holds, which keep lots exact."""
        postings = []
        for name, bucket, amount, currency in legs:
            if type(amount) is not int or amount == 0:
                raise InvalidAmount(f"leg amount must be a non-zero integer, got {amount!r}")
            account_id, account_currency = self.platform(tx, name, bucket)
            if currency != account_currency:
                raise CurrencyMismatch(
                    f"account {name}:{bucket} is in {account_currency}, not {currency}"
                )
            postings.append(Posting(account_id, amount, currency))
        entries.check_balanced(postings)
        request = {"op": "transfer", "legs": [list(leg) for leg in legs], "kind": kind}
        entry_id = entries.claim(
            tx,
            kind=kind,
            key=idempotency_key,
            request=request,
            cause_type=None,
            cause_id=None,
            memo=memo,
            now_us=self.now_us(),
        )
        if entry_id is None:
            return entries.load(tx, idempotency_key)
        entries.write_postings(tx, entry_id, postings)
        return PostedEntry(entry_id, kind, False, postings)

    # ---- lot expiry -----------------------------------------------------------------------

    def expire_lots(self, tx: Tx, *, limit: int = 500) -> int:
        """Remove the free (un-earmarked) remainder of every lot past its expiry with an
        ``expiry`` entry. Earmarked value stays for the holds that reserved it; once released
        it becomes free and a later sweep takes it. Accounts are locked in ascending id order
        (each before its lots), so concurrent sweeps cannot deadlock. Run it in its own
        transaction, not after ``expire_holds`` in the same one. Returns the entries written."""
        now = self.now_us()
        due = tx.all(
            "SELECT l.id, l.account_id, a.user_id, a.bucket FROM lots l "
            "JOIN accounts a ON a.id = l.account_id "
            "WHERE l.expires_at IS NOT NULL AND l.expires_at <= ? "
            "AND l.remaining_nanos > l.earmarked_nanos ORDER BY l.account_id, l.id LIMIT ?",
            (now, limit),
        )
        written = 0
        locked: set[int] = set()
        for lot_id, account_id, user_id, bucket in due:
            ua = self.user_accounts(tx, int(user_id), str(bucket))
            if int(account_id) not in locked:
                self._lock_bucket(tx, ua)
                locked.add(int(account_id))
            row = tx.one(
                "SELECT remaining_nanos, earmarked_nanos FROM lots WHERE id = ?", (lot_id,)
            )
            assert row is not None
            remaining, earmarked = int(row[0]), int(row[1])
            free = remaining - earmarked
            if free <= 0:
                continue
            dest_id, dest_currency = self.platform(tx, "expired:lots", ua.bucket)
            entry_id = entries.claim(
                tx,
                kind="expiry",
                key=f"expiry:lot:{lot_id}:{remaining}",
                request=None,
                cause_type="lot",
                cause_id=str(lot_id),
                memo="lot expired",
                now_us=now,
            )
            if entry_id is None:
                continue
            postings = self._draw(tx, ua, [(int(lot_id), free)])
            postings.append(Posting(dest_id, free, dest_currency))
            entries.write_postings(tx, entry_id, postings)
            written += 1
        return written
