"""Starter credit: an operator-configured welcome credit per bucket, granted in the same
transaction that creates an account, exactly once per user and bucket — through retries,
rollbacks and concurrent attempts — with the same campaign, redemption and ledger trail as a
code. On both databases, against a running server."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from tallygate.credits import claims
from tallygate.kit.clock import to_epoch_us
from tallygate.models.credits import redemptions
from tallygate.models.ledger import entries
from tallygate.models.users import users as users_table
from tallygate.users import service as users
from tallygate.users.service import EmailTaken
from tests.credits.conftest import UNIT, as_operator, as_user, campaign, create_campaign
from tests.fixtures.factories import PASSWORD
from tests.fixtures.server import LiveServer


def create(live: LiveServer, email: str, *, address: str | None = None) -> users.User:
    with live.db.begin() as conn:
        return users.create_user(
            conn,
            live.ledger,
            email=email,
            password=PASSWORD,
            now_us=to_epoch_us(live.clock.now()),
            client_address=address,
        )


def grants(live: LiveServer) -> list[tuple[str, int]]:
    with live.db.read() as conn:
        rows = conn.execute(
            select(entries.c.idempotency_key, entries.c.id)
            .where(entries.c.kind == "grant")
            .order_by(entries.c.id)
        )
        return [(str(k), int(i)) for k, i in rows]


def balances(live: LiveServer, user: users.User) -> dict[str, int]:
    with as_user(live, user) as http:
        wallet = http.get("/api/wallet").json()
    return {b["bucket"]: b["balance_nanos"] for b in wallet["buckets"]}


class TestStarterCredit:
    def test_a_new_account_gets_each_buckets_starter_credit_with_a_full_trail(
        self, live: LiveServer
    ) -> None:
        with as_operator(live) as ops:
            routed = create_campaign(
                ops, name="Welcome CNY", kind="starter", bucket="routed", amount="5"
            )
            create_campaign(ops, name="Welcome USD", kind="starter", bucket="credit", amount="0.5")
        user = create(live, "new@example.com")
        assert balances(live, user) == {"credit": UNIT // 2, "routed": 5 * UNIT}
        with as_user(live, user) as http:
            history = http.get("/api/credits/redemptions").json()["items"]
        assert {(h["campaign"], h["kind"], h["code_prefix"]) for h in history} == {
            ("Welcome CNY", "starter", ""),
            ("Welcome USD", "starter", ""),
        }
        assert sorted(k for k, _ in grants(live)) == [
            f"starter:{user.id}:credit",
            f"starter:{user.id}:routed",
        ]
        with as_operator(live) as ops:
            shown = campaign(ops, routed["id"])
        assert shown["redeemed_count"] == 1 and shown["stats"]["credited_nanos"] == 5 * UNIT

    def test_retried_account_creation_grants_the_credit_exactly_once(
        self, live: LiveServer
    ) -> None:
        with as_operator(live) as ops:
            create_campaign(ops, kind="starter", bucket="routed", amount="5")
        # A first attempt that rolled back (the request failed after creating the user)
        # leaves neither the user nor the grant behind.
        with pytest.raises(RuntimeError), live.db.begin() as conn:
            users.create_user(
                conn,
                live.ledger,
                email="retry@example.com",
                password=PASSWORD,
                now_us=to_epoch_us(live.clock.now()),
            )
            raise RuntimeError("connection dropped before commit")
        assert grants(live) == []
        user = create(live, "retry@example.com")
        with pytest.raises(EmailTaken):
            create(live, "retry@example.com")
        with live.db.begin() as conn:
            again = claims.grant_starter(
                conn, live.ledger, user_id=user.id, now_us=to_epoch_us(live.clock.now())
            )
        assert again == []
        assert [k for k, _ in grants(live)] == [f"starter:{user.id}:routed"]
        assert balances(live, user)["routed"] == 5 * UNIT

    def test_concurrent_creations_of_one_account_grant_once(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            create_campaign(ops, kind="starter", bucket="routed", amount="5")
        outcomes: list[str] = []
        barrier = threading.Barrier(6)

        def attempt() -> None:
            barrier.wait()
            try:
                create(live, "race@example.com")
                outcomes.append("created")
            except EmailTaken:
                outcomes.append("taken")

        threads = [threading.Thread(target=attempt) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes) == ["created"] + ["taken"] * 5
        with live.db.read() as conn:
            (user_id,) = conn.execute(
                select(users_table.c.id).where(users_table.c.email == "race@example.com")
            ).scalars()
        assert [k for k, _ in grants(live)] == [f"starter:{user_id}:routed"]

    def test_operators_get_no_starter_credit(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            create_campaign(ops, kind="starter", bucket="routed", amount="5")
        live.make.operator()
        assert grants(live) == []

    def test_per_address_and_total_caps_limit_grants_without_blocking_signup(
        self, live: LiveServer
    ) -> None:
        with as_operator(live) as ops:
            made = create_campaign(
                ops, kind="starter", bucket="routed", amount="1", per_address_limit=2, total_cap=3
            )
        same = [create(live, f"same{i}@example.com", address="203.0.113.9") for i in range(3)]
        other = create(live, "other@example.com", address="198.51.100.7")
        last = create(live, "late@example.com", address="192.0.2.1")
        got = [balances(live, u)["routed"] for u in [*same, other, last]]
        assert got == [UNIT, UNIT, 0, UNIT, 0]
        with as_operator(live) as ops:
            assert campaign(ops, made["id"])["state"] == "exhausted"

    def test_a_disabled_starter_campaign_grants_nothing_and_the_newest_active_one_applies(
        self, live: LiveServer
    ) -> None:
        with as_operator(live) as ops:
            old = create_campaign(ops, name="Old", kind="starter", bucket="routed", amount="1")
            new = create_campaign(ops, name="New", kind="starter", bucket="routed", amount="2")
            first = create(live, "first@example.com")
            ops.post(f"/admin/api/credits/campaigns/{new['id']}/disable")
            second = create(live, "second@example.com")
            ops.post(f"/admin/api/credits/campaigns/{old['id']}/disable")
            third = create(live, "third@example.com")
        assert [balances(live, u)["routed"] for u in (first, second, third)] == [
            2 * UNIT,
            UNIT,
            0,
        ]
        with live.db.read() as conn:
            count = conn.execute(select(func.count()).select_from(redemptions)).scalar_one()
        assert count == 2
