"""An independent in-memory model of the ledger (research/ledger.md §6.3 T1): plain dicts and
lists, no database, no code shared with ``tallygate.ledger``. It predicts, for every operation,
the result code and every balance, held amount, debt and lot remainder, and which lots a movement
draws from — written from the documented contract (DESIGN.md §2), not from the implementation.

Amounts are integer nano-units; times are integer microseconds. Lots are known by their creation
order (``seq``); the state machine maps them to the real lot ids."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
REPLAYED = "replayed"
CONFLICT = "conflict"
INSUFFICIENT = "insufficient"
OWES = "owes"
NOT_PENDING = "not_pending"
NOT_FOUND = "not_found"

Draws = list[tuple[int, int]]  # (lot seq, nano-units) in drawing order
Bucket = tuple[int, str]  # (user id, bucket)


@dataclass
class Lot:
    seq: int
    owner: Bucket
    kind: str  # paid | promo
    priority: int
    expires_at: int | None
    remaining: int
    earmarked: int = 0

    @property
    def free(self) -> int:
        return self.remaining - self.earmarked

    def order(self) -> tuple[int, bool, int, int, int]:
        """Priority, then soonest expiry (none last), then promo before paid, then oldest."""
        never = self.expires_at is None
        return (self.priority, never, self.expires_at or 0, self.kind != "promo", self.seq)


@dataclass
class Hold:
    owner: Bucket
    amount: int
    expires_at: int
    earmarks: Draws
    status: str = "pending"
    settled_total: int | None = None  # the actual usage it was settled with


@dataclass
class Outcome:
    code: str
    draws: Draws = field(default_factory=list)
    detail: dict[str, int] = field(default_factory=dict)
    lot: int | None = None  # the lot a credit opened


class Model:
    def __init__(self, now_us: int, ttl_us: int, grace_us: int) -> None:
        self.now = now_us
        self.ttl = ttl_us
        self.grace = grace_us
        self.lots: list[Lot] = []
        self.debt: dict[Bucket, int] = defaultdict(int)
        self.requests: dict[str, tuple[Any, ...]] = {}  # idempotency key → request
        self.holds: dict[str, Hold] = {}
        self.entries = 0  # journal entries written so far

    # ---- observations ----------------------------------------------------------------------

    def balance(self, owner: Bucket) -> int:
        return sum(lot.remaining for lot in self.lots if lot.owner == owner)

    def held(self, owner: Bucket) -> int:
        return sum(
            h.amount for h in self.holds.values() if h.owner == owner and h.status == "pending"
        )

    def available(self, owner: Bucket) -> int:
        return self.balance(owner) - self.held(owner)

    # ---- helpers ---------------------------------------------------------------------------

    def _plan(self, owner: Bucket, amount: int, first: int | None = None) -> Draws:
        """Split ``amount`` over the free part of the owner's lots in draw order."""
        lots = sorted((lot for lot in self.lots if lot.owner == owner), key=Lot.order)
        lots.sort(key=lambda lot: lot.seq != first)  # stable: the named lot, then the order
        draws: Draws = []
        for lot in lots:
            take = min(lot.free, amount)
            if take > 0:
                draws.append((lot.seq, take))
                amount -= take
        return draws

    def _take(self, draws: Draws) -> None:
        for seq, amount in draws:
            self.lots[seq].remaining -= amount

    def _seen(self, key: str, request: tuple[Any, ...]) -> str | None:
        if key not in self.requests:
            return None
        return REPLAYED if self.requests[key] == request else CONFLICT

    # ---- money in and out --------------------------------------------------------------------

    def credit(self, owner: Bucket, amount: int, key: str, kind: str, priority: int,
               expires_at: int | None) -> Outcome:  # fmt: skip
        request = ("credit", owner, amount, kind, priority, expires_at)
        if seen := self._seen(key, request):
            return Outcome(seen)
        self.requests[key] = request
        self.entries += 1
        repaid = min(self.debt[owner], amount)
        self.debt[owner] -= repaid
        outcome = Outcome(OK, detail={"debt_repaid": repaid})
        if amount > repaid:
            lot = Lot(len(self.lots), owner, kind, priority, expires_at, amount - repaid)
            self.lots.append(lot)
            outcome.lot = lot.seq
        return outcome

    def debit(self, owner: Bucket, amount: int, key: str) -> Outcome:
        request = ("debit", owner, amount)
        if seen := self._seen(key, request):
            return Outcome(seen)
        if self.available(owner) < amount:
            return Outcome(INSUFFICIENT, detail={"short": amount - self.available(owner)})
        self.requests[key] = request
        self.entries += 1
        draws = self._plan(owner, amount)
        self._take(draws)
        return Outcome(OK, draws)

    def reverse(self, owner: Bucket, amount: int, key: str, lot: int | None) -> Outcome:
        request = ("reverse", owner, amount, lot)
        if seen := self._seen(key, request):
            return Outcome(seen)
        self.requests[key] = request
        self.entries += 1
        taken = min(amount, self.available(owner))
        draws = self._plan(owner, taken, first=lot)
        self._take(draws)
        self.debt[owner] += amount - taken
        return Outcome(OK, draws, {"taken": taken, "debt_booked": amount - taken})

    # ---- holds -------------------------------------------------------------------------------

    def place_hold(self, owner: Bucket, amount: int, key: str, ttl_us: int | None) -> Outcome:
        if key in self.holds:
            same = self.holds[key].owner == owner and self.holds[key].amount == amount
            return Outcome(REPLAYED if same else CONFLICT)
        if self.debt[owner] > 0:
            return Outcome(OWES)
        if self.available(owner) < amount:
            return Outcome(INSUFFICIENT, detail={"short": amount - self.available(owner)})
        draws = self._plan(owner, amount)
        for seq, part in draws:
            self.lots[seq].earmarked += part
        expires = self.now + (self.ttl if ttl_us is None else ttl_us)
        self.holds[key] = Hold(owner, amount, expires, draws)
        return Outcome(OK, draws)

    def _unmark(self, hold: Hold, status: str) -> None:
        for seq, part in hold.earmarks:
            self.lots[seq].earmarked -= part
        hold.status = status

    def settle(self, key: str, actual: int) -> Outcome:
        hold = self.holds.get(key)
        if hold is None:
            return Outcome(NOT_FOUND)
        charged = min(actual, hold.amount)
        detail = {
            "charged": charged,
            "overrun": actual - charged,
            "released": hold.amount - charged,
        }
        if hold.status == "settled" and hold.settled_total == actual:
            return Outcome(REPLAYED, detail=detail)
        if hold.status != "pending":
            return Outcome(NOT_PENDING)
        draws: Draws = []
        left = charged
        for seq, part in hold.earmarks:
            if min(part, left):
                draws.append((seq, min(part, left)))
            left -= min(part, left)
        self._unmark(hold, "settled")
        self._take(draws)
        hold.settled_total = actual
        self.entries += 1 if actual else 0  # settling zero writes no entry
        return Outcome(OK, draws, detail)

    def release(self, key: str) -> Outcome:
        hold = self.holds.get(key)
        if hold is None:
            return Outcome(NOT_FOUND)
        if hold.status == "released":
            return Outcome(REPLAYED)
        if hold.status != "pending":
            return Outcome(NOT_PENDING)
        self._unmark(hold, "released")
        return Outcome(OK)

    # ---- time --------------------------------------------------------------------------------

    def advance(self, us: int) -> None:
        self.now += us

    def expire_holds(self) -> Outcome:
        due = [h for h in self.holds.values() if h.status == "pending"]
        due = [h for h in due if h.expires_at + self.grace <= self.now]
        for hold in due:
            self._unmark(hold, "expired")
        return Outcome(OK, detail={"count": len(due)})

    def expire_lots(self) -> Outcome:
        """Each lot past its expiry loses its free (un-earmarked) part, one entry per lot."""
        due = [lot for lot in self.lots if lot.expires_at is not None]
        due = [lot for lot in due if lot.expires_at <= self.now and lot.free > 0]  # type: ignore[operator]
        draws = [(lot.seq, lot.free) for lot in due]
        self._take(draws)
        self.entries += len(due)
        return Outcome(OK, draws, {"count": len(due)})
