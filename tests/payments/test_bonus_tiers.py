"""Bonus tiers (operator-set, snapshotted on the order), on both databases: the credited amount
is exactly rate × (1 + the bonus of the highest tier the converted amount reaches), and
changing the tiers later changes neither an existing order's credit nor its refunds."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.server import LiveServer
from tests.payments.conftest import ServerFactory
from tests.payments.helpers import (
    as_user,
    assert_reconciled,
    balance,
    create_order,
    get_order,
    sandbox,
)

TIERS = {"credit": [("50", "0.05"), ("100", "0.125")]}


def pay(live: LiveServer, user: Any, **body: Any) -> dict[str, Any]:
    with as_user(live, user) as http:
        order = create_order(http, **body)
        assert sandbox(http, order["id"], "pay").status_code == 200
        return get_order(http, order["id"])


@pytest.mark.parametrize(
    ("amount", "currency", "bonus", "credited_nanos"),
    [
        ("49.99", "USD", "0", 49_990_000_000),  # below every tier
        ("50.00", "USD", "0.05", 52_500_000_000),  # exactly the first tier's minimum
        ("99.99", "USD", "0.05", 104_989_500_000),
        ("100.00", "USD", "0.125", 112_500_000_000),
        ("100.01", "USD", "0.125", 112_511_250_000),
        # The tier is chosen on the converted amount: 10,000 JPY × 0.0067 = 67 USD → 5 %.
        ("10000", "JPY", "0.05", 70_350_000_000),
        # Three decimals: 16.001 KWD × 3.25 = 52.00325 → 5 % → 54.6034125.
        ("16.001", "KWD", "0.05", 54_603_412_500),
    ],
)
def test_the_credit_follows_the_tier_exactly(
    start: ServerFactory, amount: str, currency: str, bonus: str, credited_nanos: int
) -> None:
    live = start(topup_bonus_tiers=TIERS)
    user = live.make.user()
    order = pay(live, user, amount=amount, currency=currency)
    assert (order["bonus_rate"], order["quoted_nanos"]) == (bonus, credited_nanos)
    assert (order["status"], order["credited_nanos"]) == ("paid", credited_nanos)
    assert balance(live, user.id).balance_nanos == credited_nanos
    assert order["usage"]["original_nanos"] == credited_nanos  # the order's one lot
    assert_reconciled(live)


def test_a_later_tier_change_alters_no_existing_order(start: ServerFactory) -> None:
    before = start(topup_bonus_tiers=TIERS)
    user = before.make.user()
    with as_user(before, user) as http:
        waiting = create_order(http, amount="100.00")  # quoted under 12.5 %
    assert (waiting["bonus_rate"], waiting["quoted_nanos"]) == ("0.125", 112_500_000_000)
    early = pay(before, user, amount="100.00")

    # The operator raises the top tier to 20 % (a restart with new settings).
    after = start(topup_bonus_tiers={"credit": [("50", "0.05"), ("100", "0.20")]})
    with as_user(after, user) as http:
        assert sandbox(http, waiting["id"], "pay").status_code == 200
        paid_late = get_order(http, waiting["id"])
        fresh = create_order(http, amount="100.00")
    assert (paid_late["bonus_rate"], paid_late["credited_nanos"]) == ("0.125", 112_500_000_000)
    assert (fresh["bonus_rate"], fresh["quoted_nanos"]) == ("0.20", 120_000_000_000)
    assert balance(after, user.id).balance_nanos == 2 * 112_500_000_000

    # A refund converts at the order's snapshotted factor, not today's: 10 USD → 11.25.
    operator = before.make.operator()  # one factory per database: its e-mails are unique
    with as_user(after, operator) as admin:
        made = admin.post(
            f"/admin/api/payments/orders/{early['id']}/refunds",
            json={"amount": "10.00", "reason": "partial", "mode": "manual"},
        )
    assert made.status_code == 201, made.text
    assert made.json()["refunded_nanos"] == 11_250_000_000
    assert balance(after, user.id).balance_nanos == 2 * 112_500_000_000 - 11_250_000_000
    assert_reconciled(after)
