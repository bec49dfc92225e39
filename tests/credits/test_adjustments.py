"""Operator adjustments over HTTP on both databases: a credit or debit of a user's bucket with
a mandatory reason, optionally correcting a receipt — a ledger entry of kind ``adjustment``,
an audit event, and the reason shown beside the request it corrects."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select

from tallygate.audit import service as audit
from tallygate.ledger.reconcile import reconcile
from tallygate.models.ledger import entries, lots
from tests.credits.conftest import UNIT, as_operator, as_user, row_counts, spend
from tests.fixtures.server import LiveServer


class TestAdjustments:
    def test_an_adjustment_correcting_a_receipt_shows_beside_that_request(
        self, live: LiveServer
    ) -> None:
        user = live.make.user()
        live.make.topup(user.id, 10 * UNIT, bucket="routed")
        spend(live, user, "req-over", hold_nanos=3 * UNIT, charge_nanos=2 * UNIT)
        with as_operator(live) as ops:
            response = ops.post(
                "/admin/api/adjustments",
                json={
                    "user_id": user.id,
                    "amount": "1.25",
                    "reason": "upstream double-counted cached tokens",
                    "request_id": "req-over",
                },
            )
            listed = ops.get("/admin/api/adjustments", params={"user_id": user.id}).json()
        assert response.status_code == 201, response.text
        made = response.json()
        assert (made["bucket"], made["direction"], made["amount"]) == ("routed", "credit", "1.25")
        assert made["balance_after_nanos"] == 8 * UNIT + UNIT + UNIT // 4
        assert [i["id"] for i in listed["items"]] == [made["id"]]
        with as_user(live, user) as http:
            beside = http.get("/api/receipts/req-over/adjustments").json()["items"]
            export = http.get("/api/exports/requests", params={"format": "csv"})
            mine = http.get("/api/adjustments").json()["items"]
        assert [(a["reason"], a["amount_nanos"]) for a in beside] == [
            ("upstream double-counted cached tokens", UNIT + UNIT // 4)
        ]
        assert beside[0]["operator"] is None  # users do not see who
        assert [a["id"] for a in mine] == [made["id"]]
        (row,) = list(csv.DictReader(io.StringIO(export.text)))
        assert row["request_id"] == "req-over"
        assert row["adjustment"] == "1.25"
        assert row["adjustment_reason"] == "upstream double-counted cached tokens"
        with live.db.read() as conn:
            entry = conn.execute(select(entries).where(entries.c.id == made["entry_id"]))
            e = entry.mappings().one()
            lot = conn.execute(select(lots).where(lots.c.source_entry_id == e["id"])).mappings()
            (opened,) = list(lot)
            tx = live.ledger.tx(conn)
            (event,) = tx.all(
                "SELECT action, target, reason FROM audit_events WHERE action LIKE 'adjustment%'"
            )
            assert audit.verify(tx) == []
            assert reconcile(tx, now_us=live.ledger.now_us(), grace_us=0).ok
        assert (e["kind"], e["cause_type"], e["cause_id"], e["memo"]) == (
            "adjustment",
            "request",
            "req-over",
            "upstream double-counted cached tokens",
        )
        assert opened["kind"] == "adjustment"
        assert event == (
            "adjustment.create",
            f"user:{user.id}:routed",
            "upstream double-counted cached tokens",
        )

    def test_a_debit_takes_only_available_value(self, live: LiveServer) -> None:
        user = live.make.user()
        live.make.topup(user.id, 2 * UNIT, bucket="credit")
        with as_operator(live) as ops:
            body = {"user_id": user.id, "bucket": "credit", "reason": "chargeback fee"}
            debited = ops.post("/admin/api/adjustments", json={**body, "amount": "-1.5"})
            before = row_counts(live.db)
            refused = ops.post("/admin/api/adjustments", json={**body, "amount": "-1"})
        assert debited.status_code == 201
        assert debited.json()["direction"] == "debit"
        assert debited.json()["balance_after_nanos"] == UNIT // 2
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == "insufficient_balance"
        assert row_counts(live.db) == before

    def test_a_retried_adjustment_with_its_key_is_applied_once(self, live: LiveServer) -> None:
        user = live.make.user()
        body = {
            "user_id": user.id,
            "bucket": "routed",
            "amount": "3",
            "reason": "goodwill",
            "idempotency_key": "ticket-881",
        }
        with as_operator(live) as ops:
            first = ops.post("/admin/api/adjustments", json=body).json()
            again = ops.post("/admin/api/adjustments", json=body).json()
            changed = ops.post("/admin/api/adjustments", json={**body, "amount": "4"})
            listed = ops.get("/admin/api/adjustments").json()["items"]
        assert again["id"] == first["id"] and again["entry_id"] == first["entry_id"]
        assert changed.status_code == 409
        assert len(listed) == 1

    def test_bad_adjustments_are_refused_and_write_nothing(self, live: LiveServer) -> None:
        user, other = live.make.user(), live.make.user()
        spend_user = live.make.user()
        live.make.topup(spend_user.id, UNIT, bucket="routed")
        spend(live, spend_user, "req-theirs", hold_nanos=UNIT // 2, charge_nanos=UNIT // 4)
        base = {"user_id": user.id, "bucket": "routed", "amount": "1", "reason": "why"}
        with as_operator(live) as ops:
            before = row_counts(live.db)
            cases = {
                "no reason": {**base, "reason": "  "},
                "zero": {**base, "amount": "0"},
                "float-ish": {**base, "amount": "1e-12"},
                "no bucket": {k: v for k, v in base.items() if k != "bucket"},
                "unknown user": {**base, "user_id": 999_999},
                "someone else's receipt": {**base, "request_id": "req-theirs"},
            }
            got = {
                name: ops.post("/admin/api/adjustments", json=body).json()["error"]["code"]
                for name, body in cases.items()
            }
            assert row_counts(live.db) == before
        with as_user(live, other) as http:
            hidden = http.get("/api/receipts/req-theirs/adjustments")
            not_operator = http.post("/admin/api/adjustments", json=base)
        assert got == {
            "no reason": "invalid_adjustment",
            "zero": "invalid_adjustment",
            "float-ish": "invalid_request",
            "no bucket": "invalid_adjustment",
            "unknown user": "user_not_found",
            "someone else's receipt": "receipt_not_found",
        }
        assert hidden.status_code == 404
        assert not_operator.status_code == 403
