"""``reconcile``: prove that every cached number equals the history it summarises.

Checks, each reported with the rows involved:
- every entry has ≥ 2 postings summing to zero per currency; each posting is in its
  account's currency;
- each user account's cached balance = its normal side × Σ postings; bucket balance = Σ lot
  remainders; each lot's remaining = Σ postings on it; nothing is negative;
- each bucket's held amount = Σ its pending holds; each lot's earmark = Σ pending earmarks;
- no pending hold is past TTL + grace; every settled hold has exactly the usage it settled,
  and no released or expired hold charged anything;
- each API key's spend counters equal its holds (reserved = pending, spent = settled);
- the audit chain is intact."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from tallygate.audit.service import verify as verify_audit
from tallygate.ledger import lots as lots_mod
from tallygate.ledger.tx import Tx


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        summary = ", ".join(f"{n} {name}" for name, n in self.counts.items())
        if self.ok:
            return [f"reconcile: OK ({summary}); every balance equals its postings"]
        return [f"reconcile: {len(self.problems)} problem(s) found ({summary})"] + [
            f"  - {p}" for p in self.problems
        ]


def reconcile(tx: Tx, *, now_us: int, grace_us: int) -> Report:
    report = Report()
    _entries(tx, report)
    _balances(tx, report)
    _lots(tx, report)
    _holds(tx, report, now_us, grace_us)
    _key_spend(tx, report)
    report.problems.extend(verify_audit(tx))
    return report


def _entries(tx: Tx, report: Report) -> None:
    sums: dict[tuple[int, str], int] = defaultdict(int)
    counts: dict[int, int] = defaultdict(int)
    for entry_id, currency, amount in tx.all(
        "SELECT entry_id, currency, amount_nanos FROM postings"
    ):
        sums[(int(entry_id), str(currency))] += int(amount)
        counts[int(entry_id)] += 1
    entry_ids = [int(r[0]) for r in tx.all("SELECT id FROM entries")]
    report.counts["entries"] = len(entry_ids)
    report.counts["postings"] = sum(counts.values())
    for entry_id in entry_ids:
        if counts.get(entry_id, 0) < 2:
            report.problems.append(f"entry {entry_id} has {counts.get(entry_id, 0)} posting(s)")
    for (entry_id, currency), total in sorted(sums.items()):
        if total != 0:
            report.problems.append(
                f"entry {entry_id} does not balance in {currency}: postings sum to {total}"
            )
    for posting_id, pc, ac in tx.all(
        "SELECT p.id, p.currency, a.currency FROM postings p JOIN accounts a "
        "ON a.id = p.account_id WHERE p.currency <> a.currency"
    ):
        report.problems.append(f"posting {posting_id} is in {pc} but its account is in {ac}")


def _balances(tx: Tx, report: Report) -> None:
    rows = tx.all(
        "SELECT a.id, a.code, a.normal, a.balance_nanos, a.held_nanos, "
        "COALESCE((SELECT SUM(p.amount_nanos) FROM postings p WHERE p.account_id = a.id), 0) "
        "FROM accounts a WHERE a.kind <> 'platform'"
    )
    report.counts["user accounts"] = len(rows)
    for _id, code, normal, cached, held, posted in rows:
        derived = int(normal) * int(posted)
        if int(cached) != derived:
            report.problems.append(
                f"account {code}: cached balance {cached} ≠ Σ postings {derived}"
            )
        if int(cached) < 0 or int(held) < 0 or int(held) > int(cached):
            report.problems.append(f"account {code}: out of bounds (balance {cached}, held {held})")


def _lots(tx: Tx, report: Report) -> None:
    rows = tx.all(
        "SELECT l.id, l.account_id, l.remaining_nanos, l.earmarked_nanos, "
        "COALESCE((SELECT SUM(p.amount_nanos) FROM postings p WHERE p.lot_id = l.id), 0) "
        "FROM lots l"
    )
    report.counts["lots"] = len(rows)
    per_account: dict[int, int] = defaultdict(int)
    for lot_id, account_id, remaining, earmarked, posted in rows:
        per_account[int(account_id)] += int(remaining)
        if int(remaining) != int(posted):
            report.problems.append(f"lot {lot_id}: remaining {remaining} ≠ Σ postings {posted}")
        if int(remaining) < 0 or not 0 <= int(earmarked) <= int(remaining):
            report.problems.append(
                f"lot {lot_id}: out of bounds (remaining {remaining}, earmarked {earmarked})"
            )
    for account_id, code, balance in tx.all(
        "SELECT id, code, balance_nanos FROM accounts WHERE kind = 'bucket'"
    ):
        if per_account.get(int(account_id), 0) != int(balance):
            report.problems.append(
                f"account {code}: balance {balance} ≠ Σ lot remainders "
                f"{per_account.get(int(account_id), 0)}"
            )


def _holds(tx: Tx, report: Report, now_us: int, grace_us: int) -> None:
    held: dict[int, int] = defaultdict(int)
    earmarked: dict[int, int] = defaultdict(int)
    holds = tx.all(
        "SELECT hold_key, account_id, amount_nanos, status, earmarks, expires_at, "
        "settled_nanos, overrun_nanos FROM holds"
    )
    report.counts["holds"] = len(holds)
    charged = {
        str(key): -int(total)
        for key, total in tx.all(
            "SELECT e.idempotency_key, SUM(p.amount_nanos) FROM entries e "
            "JOIN postings p ON p.entry_id = e.id JOIN accounts a ON a.id = p.account_id "
            "WHERE e.idempotency_key LIKE 'settle:%' AND a.kind = 'bucket' "
            "GROUP BY e.idempotency_key"
        )
    }
    for key, account_id, amount, status, marks, expires_at, settled, _overrun in holds:
        usage = charged.pop(f"settle:{key}", 0)
        if status == "pending":
            held[int(account_id)] += int(amount)
            for lot_id, part in lots_mod.decode_earmarks(str(marks)):
                earmarked[lot_id] += part
            if int(expires_at) + grace_us < now_us:
                report.problems.append(f"hold {key} is still pending past its TTL + grace")
            if usage:
                report.problems.append(f"pending hold {key} already has a usage entry")
        elif status == "settled":
            if settled is None or int(settled) > int(amount):
                report.problems.append(f"hold {key} settled {settled} above its amount {amount}")
            elif usage != int(settled):
                report.problems.append(
                    f"hold {key} settled {settled} but its usage entry charged {usage}"
                )
        elif usage:
            report.problems.append(f"hold {key} is {status} but charged {usage}")
    for key in charged:
        report.problems.append(f"usage entry {key} has no settled hold")
    for account_id, code, cached in tx.all(
        "SELECT id, code, held_nanos FROM accounts WHERE kind = 'bucket'"
    ):
        if int(cached) != held.get(int(account_id), 0):
            report.problems.append(
                f"account {code}: held {cached} ≠ Σ pending holds {held.get(int(account_id), 0)}"
            )
    for lot_id, marked in tx.all("SELECT id, earmarked_nanos FROM lots"):
        if int(marked) != earmarked.get(int(lot_id), 0):
            report.problems.append(
                f"lot {lot_id}: earmarked {marked} ≠ Σ pending earmarks "
                f"{earmarked.get(int(lot_id), 0)}"
            )


def _key_spend(tx: Tx, report: Report) -> None:
    sums: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for key_id, bucket, status, amount, settled in tx.all(
        "SELECT h.key_id, a.bucket, h.status, h.amount_nanos, h.settled_nanos FROM holds h "
        "JOIN accounts a ON a.id = h.account_id WHERE h.key_id IS NOT NULL"
    ):
        pair = sums[(int(key_id), str(bucket))]
        if status == "pending":
            pair[0] += int(amount)
        elif status == "settled":
            pair[1] += int(settled or 0)
    for key_id, bucket, reserved, spent in tx.all(
        "SELECT key_id, bucket, total_reserved_nanos, total_spent_nanos FROM key_spend"
    ):
        want_reserved, want_spent = sums.get((int(key_id), str(bucket)), [0, 0])
        if int(reserved) != want_reserved or int(spent) != want_spent:
            report.problems.append(
                f"key {key_id} {bucket}: counters reserved {reserved} / spent {spent} ≠ holds "
                f"{want_reserved} / {want_spent}"
            )
