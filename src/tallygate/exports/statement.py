"""The reconciliation statement of one bucket over a period [since, until):

    opening balance + Σ movements by entry kind = closing balance

computed from the bucket account's postings — the same rows the wallet ledger export lists — and
the debt account beside it (what is owed on the bucket: opened, booked, repaid, closing). The
caller reads it and the export rows inside one snapshot (REPEATABLE READ on PostgreSQL), so
concurrent traffic cannot make them disagree."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from tallygate.errors import NotFound
from tallygate.kit.money import to_decimal_string

KIND_LABELS = {
    "topup": "top-ups",
    "refund": "refunds",
    "refund_failed": "failed refunds re-credited",
    "refund_write_off": "refund shortfalls written off",
    "reversal": "reversals",
    "dispute": "disputes",
    "redeem": "redemptions",
    "grant": "starter credit and grants",
    "adjustment": "adjustments",
    "usage": "usage",
    "expiry": "expiries",
}


@dataclass
class Statement:
    user_id: int
    bucket: str
    currency: str
    since_us: int | None
    until_us: int | None
    opening_nanos: int
    closing_nanos: int
    movements: dict[str, int] = field(default_factory=dict)
    debt_opening_nanos: int = 0
    debt_closing_nanos: int = 0
    debt_movements: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return (
            self.opening_nanos + sum(self.movements.values()) == self.closing_nanos
            and self.debt_opening_nanos + sum(self.debt_movements.values())
            == self.debt_closing_nanos
        )

    def as_dict(self) -> dict[str, object]:
        def money(n: int) -> dict[str, object]:
            return {"nanos": n, "amount": to_decimal_string(n)}

        return {
            "user_id": self.user_id,
            "bucket": self.bucket,
            "currency": self.currency,
            "opening_balance": money(self.opening_nanos),
            "movements": [
                {"kind": k, "label": KIND_LABELS.get(k, k), **money(v)}
                for k, v in sorted(self.movements.items())
            ],
            "closing_balance": money(self.closing_nanos),
            "debt": {
                "opening": money(self.debt_opening_nanos),
                "movements": [
                    {"kind": k, "label": KIND_LABELS.get(k, k), **money(v)}
                    for k, v in sorted(self.debt_movements.items())
                ],
                "closing": money(self.debt_closing_nanos),
            },
            "balanced": self.balanced,
        }


def _sums(
    conn: Connection, account_id: int, normal: int, since: int | None, until: int | None
) -> tuple[int, dict[str, int], int]:
    base = "FROM postings p JOIN entries e ON e.id = p.entry_id WHERE p.account_id = :a"
    before = 0
    if since is not None:
        before = int(
            conn.execute(
                text(f"SELECT COALESCE(SUM(p.amount_nanos), 0) {base} AND e.created_at < :since"),
                {"a": account_id, "since": since},
            ).scalar_one()
        )
    window, params = "", {"a": account_id}
    if since is not None:
        window += " AND e.created_at >= :since"
        params["since"] = since
    if until is not None:
        window += " AND e.created_at < :until"
        params["until"] = until
    moves: dict[str, int] = {}
    for kind, total in conn.execute(
        text(f"SELECT e.kind, SUM(p.amount_nanos) {base}{window} GROUP BY e.kind"), params
    ):
        moves[str(kind)] = normal * int(total)
    opening = normal * before
    return opening, moves, opening + sum(moves.values())


def statement(
    conn: Connection, *, user_id: int, bucket: str, since_us: int | None, until_us: int | None
) -> Statement:
    rows = {
        str(kind): (int(i), int(normal), str(cur))
        for i, kind, normal, cur in conn.execute(
            text(
                "SELECT id, kind, normal, currency FROM accounts WHERE user_id = :u AND bucket = :b"
            ),
            {"u": user_id, "b": bucket},
        )
    }
    if "bucket" not in rows:
        raise NotFound(f"user {user_id} has no {bucket} bucket")
    b_id, b_normal, currency = rows["bucket"]
    opening, moves, closing = _sums(conn, b_id, b_normal, since_us, until_us)
    result = Statement(user_id, bucket, currency, since_us, until_us, opening, closing, moves)
    if "debt" in rows:
        d_id, d_normal, _ = rows["debt"]
        d_open, d_moves, d_close = _sums(conn, d_id, d_normal, since_us, until_us)
        result.debt_opening_nanos, result.debt_movements = d_open, d_moves
        result.debt_closing_nanos = d_close
    return result
