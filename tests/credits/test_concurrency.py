"""Concurrent claims over real HTTP, each thread with its own client (and, unless the test is
about one account, its own account), on both databases: a single-use code is claimed once, an
account claims a shared code once, a total cap is never exceeded, and the ledger agrees."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from tallygate.ledger.reconcile import reconcile
from tallygate.models.credits import redemptions
from tallygate.models.ledger import entries
from tests.credits.conftest import (
    UNIT,
    Serve,
    as_operator,
    as_user,
    campaign,
    create_campaign,
    generate,
    redeem,
)
from tests.fixtures.server import LiveServer


@pytest.fixture
def live_many(serve: Serve) -> Iterator[LiveServer]:
    """A server where the failed-claim limit cannot interfere with the race under test."""
    with serve(redeem_max_failures=10_000) as server:
        yield server


def race(clients: list[httpx.Client], attempt: Callable[[httpx.Client], httpx.Response]) -> list:
    """Run ``attempt`` on every client at once (released together by a barrier)."""
    barrier = threading.Barrier(len(clients))
    results: list = [None] * len(clients)

    def run(i: int) -> None:
        barrier.wait()
        try:
            response = attempt(clients[i])
            results[i] = (response.status_code, response.json().get("error", {}).get("code"))
        except Exception as exc:  # surfaced by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def ledger_clean(live: LiveServer) -> None:
    with live.db.read() as conn:
        report = reconcile(
            live.ledger.tx(conn), now_us=live.ledger.now_us(), grace_us=live.ledger.hold_grace_us
        )
    assert report.ok, report.lines()


def redeem_entries(live: LiveServer) -> int:
    with live.db.read() as conn:
        stmt = select(func.count()).select_from(entries).where(entries.c.kind == "redeem")
        return int(conn.execute(stmt).scalar_one())


class TestConcurrentClaims:
    def test_twenty_accounts_racing_for_one_single_use_code_one_wins(
        self, live_many: LiveServer
    ) -> None:
        live = live_many
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="5")
            (code,) = generate(ops, made["id"])
        clients = [as_user(live, live.make.user()) for _ in range(20)]
        try:
            results = race(clients, lambda c: redeem(c, code))
        finally:
            for c in clients:
                c.close()
        assert Counter(results) == {(201, None): 1, (409, "code_exhausted"): 19}, results
        assert redeem_entries(live) == 1
        with as_operator(live) as ops:
            stats = campaign(ops, made["id"])
        assert stats["redeemed_count"] == 1
        assert stats["stats"]["credited_nanos"] == 5 * UNIT
        ledger_clean(live)

    def test_one_account_claiming_a_shared_code_ten_times_at_once_is_credited_once(
        self, live_many: LiveServer
    ) -> None:
        live = live_many
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="5")
            (shared,) = generate(ops, made["id"], shared=True)
        user = live.make.user()
        clients = [as_user(live, user) for _ in range(10)]
        try:
            results = race(clients, lambda c: redeem(c, shared))
            wallet = clients[0].get("/api/wallet").json()
        finally:
            for c in clients:
                c.close()
        assert Counter(results) == {(201, None): 1, (409, "already_claimed"): 9}, results
        assert redeem_entries(live) == 1
        routed = next(b for b in wallet["buckets"] if b["bucket"] == "routed")
        assert routed["balance_nanos"] == 5 * UNIT
        ledger_clean(live)

    def test_a_total_cap_of_five_under_twenty_accounts_gives_exactly_five(
        self, live_many: LiveServer
    ) -> None:
        live = live_many
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="1", total_cap=5)
            (shared,) = generate(ops, made["id"], shared=True)
        clients = [as_user(live, live.make.user()) for _ in range(20)]
        try:
            results = race(clients, lambda c: redeem(c, shared))
        finally:
            for c in clients:
                c.close()
        assert Counter(results) == {(201, None): 5, (409, "code_exhausted"): 15}, results
        with live.db.read() as conn:
            assert conn.execute(select(func.count()).select_from(redemptions)).scalar_one() == 5
        assert redeem_entries(live) == 5
        with as_operator(live) as ops:
            shown = campaign(ops, made["id"])
        assert (shown["redeemed_count"], shown["state"]) == (5, "exhausted")
        assert shown["stats"]["credited_nanos"] == 5 * UNIT
        ledger_clean(live)
