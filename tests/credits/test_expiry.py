"""An expiring campaign credit partly spent by requests: at expiry (moved by the test clock,
swept by the running server's sweeper) only the unspent, un-earmarked remainder leaves by an
``expiry`` entry; the receipts that spent it are listed; reconcile is clean. Both databases."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from tallygate.ledger.reconcile import reconcile
from tallygate.models.ledger import entries, lots, postings
from tests.credits.conftest import (
    UNIT,
    as_operator,
    as_user,
    campaign,
    create_campaign,
    finish,
    generate,
    redeem,
    spend,
)
from tests.fixtures.server import LiveServer


def expiry_entries(live: LiveServer) -> list[int]:
    """Nano-units each expiry entry took from a bucket, in order."""
    with live.db.read() as conn:
        rows = conn.execute(
            select(postings.c.amount_nanos)
            .join(entries, entries.c.id == postings.c.entry_id)
            .where(entries.c.kind == "expiry", postings.c.lot_id.is_not(None))
            .order_by(entries.c.id)
        )
        return [-int(a) for a in rows.scalars()]


def wait_for_expiries(live: LiveServer, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = expiry_entries(live)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"the sweeper wrote {expiry_entries(live)}, expected {count} expiries")


def stats(live: LiveServer, campaign_id: int) -> dict[str, Any]:
    with as_operator(live) as ops:
        return campaign(ops, campaign_id)["stats"]  # type: ignore[no-any-return]


def assert_reconciled(live: LiveServer) -> None:
    with live.db.read() as conn:
        report = reconcile(
            live.ledger.tx(conn), now_us=live.ledger.now_us(), grace_us=live.ledger.hold_grace_us
        )
    assert report.ok, report.lines()


def test_only_the_unspent_remainder_expires_and_the_spending_requests_are_listed(
    live: LiveServer,
) -> None:
    with as_operator(live) as ops:
        made = create_campaign(ops, name="Trial", amount="10", credit_ttl_seconds=3600)
        (code,) = generate(ops, made["id"])
    user = live.make.user()
    live.make.topup(user.id, 5 * UNIT, bucket="routed")  # paid money: never expires
    with as_user(live, user) as http:
        claimed = redeem(http, code).json()
    # Promotional credit about to expire is spent first (DESIGN.md "lot").
    spend(live, user, "req-1", hold_nanos=4 * UNIT, charge_nanos=3 * UNIT)
    spend(live, user, "req-2", hold_nanos=2 * UNIT, charge_nanos=UNIT + UNIT // 2)
    spend(live, user, "req-3", hold_nanos=UNIT, charge_nanos=None, settle=False)  # in flight

    live.clock.advance(3601)
    # 10 − 3 − 1.5 spent, 1 earmarked by the request in flight: 4.5 leaves.
    assert wait_for_expiries(live, 1) == [4 * UNIT + UNIT // 2]
    with live.db.read() as conn:
        lot = conn.execute(select(lots).where(lots.c.id == claimed["lot_id"])).mappings().one()
        paid = conn.execute(select(lots).where(lots.c.kind == "paid")).mappings().one()
    assert (lot["remaining_nanos"], lot["earmarked_nanos"]) == (UNIT, UNIT)
    assert paid["remaining_nanos"] == 5 * UNIT
    now = stats(live, made["id"])
    assert now["spent_nanos"] == 4 * UNIT + UNIT // 2 and now["spent_requests"] == 2
    assert now["expired_nanos"] == 4 * UNIT + UNIT // 2
    assert (now["unspent_nanos"], now["held_nanos"]) == (UNIT, UNIT)
    assert_reconciled(live)

    # The request in flight settles from its earmark (even on an expired lot); what it
    # released is free again, and the next sweep expires it.
    finish(live, user, "req-3", hold_nanos=UNIT, charge_nanos=UNIT // 2)
    assert wait_for_expiries(live, 2) == [4 * UNIT + UNIT // 2, UNIT // 2]
    final = stats(live, made["id"])
    assert final == {
        "redemptions": 1,
        "credited_nanos": 10 * UNIT,
        "credited": "10.00",
        "debt_repaid_nanos": 0,
        "debt_repaid": "0.00",
        "spent_nanos": 5 * UNIT,
        "spent": "5.00",
        "spent_requests": 3,
        "expired_nanos": 5 * UNIT,
        "expired": "5.00",
        "other_debits_nanos": 0,
        "other_debits": "0.00",
        "unspent_nanos": 0,
        "unspent": "0.00",
        "held_nanos": 0,
        "held": "0.00",
    }
    with as_operator(live) as ops:
        uses = ops.get(f"/admin/api/credits/campaigns/{made['id']}/usage").json()["items"]
    assert [(u["request_id"], u["spent_nanos"], u["model"]) for u in uses] == [
        ("req-1", 3 * UNIT, "demo-chat"),
        ("req-2", UNIT + UNIT // 2, "demo-chat"),
        ("req-3", UNIT // 2, "demo-chat"),
    ]
    with as_user(live, user) as http:
        wallet = {b["bucket"]: b for b in http.get("/api/wallet").json()["buckets"]}
        (mine,) = http.get("/api/credits/redemptions").json()["items"]
    assert wallet["routed"]["balance_nanos"] == 5 * UNIT  # the paid top-up, untouched
    assert mine["remaining_nanos"] == 0
    assert_reconciled(live)
