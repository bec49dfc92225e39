"""The wallet API over HTTP: both buckets, and the ledger history with pagination and filters."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from tallygate.users.service import User
from tests.fixtures.server import LiveServer

UNIT = 1_000_000_000  # nano-units per currency unit


def as_user(live: LiveServer, user: User) -> httpx.Client:
    return live.client(headers={"Authorization": f"Bearer {live.make.session_token(user)}"})


def history(http: httpx.Client, **params: Any) -> dict[str, Any]:
    response = http.get("/api/wallet/ledger", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def all_pages(http: httpx.Client, **params: Any) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = history(http, **params, **({"cursor": cursor} if cursor else {}))
        pages.append([line["entry_id"] for line in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


class TestWallet:
    def test_a_new_user_has_two_empty_buckets_with_distinct_labels_and_currencies(
        self, live: LiveServer
    ) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            response = http.get("/api/wallet")
        assert response.status_code == 200
        zero = {"balance": "0.00", "held": "0.00", "available": "0.00", "debt": "0.00"}
        zero_nanos = {"balance_nanos": 0, "held_nanos": 0, "available_nanos": 0, "debt_nanos": 0}
        assert response.json() == {
            "user_id": user.id,
            "buckets": [
                {"bucket": "credit", "label": "Credit", "currency": "USD", **zero, **zero_nanos},
                {
                    "bucket": "routed",
                    "label": "Routed balance",
                    "currency": "CNY",
                    **zero,
                    **zero_nanos,
                },
            ],
        }

    def test_shows_balance_held_and_available_exactly_per_bucket(self, live: LiveServer) -> None:
        user = live.make.user()
        live.make.topup(user.id, 12 * UNIT + 345_678_901)
        live.make.topup(user.id, 7 * UNIT, bucket="routed")
        live.make.hold(user.id, 2 * UNIT + 1, key="req-1")
        with as_user(live, user) as http:
            credit, routed = http.get("/api/wallet").json()["buckets"]
        assert credit["balance_nanos"] == 12_345_678_901
        assert credit["balance"] == "12.345678901"
        assert credit["held_nanos"] == 2_000_000_001
        assert credit["held"] == "2.000000001"
        assert credit["available_nanos"] == 10_345_678_900
        assert credit["available"] == "10.3456789"
        assert (routed["bucket"], routed["balance"], routed["available"]) == (
            "routed",
            "7.00",
            "7.00",
        )

    def test_shows_debt_after_a_refund_of_money_already_spent(self, live: LiveServer) -> None:
        user = live.make.user()
        live.make.topup(user.id, 10 * UNIT)
        live.make.spend(user.id, 8 * UNIT)
        live.make.refund(user.id, 10 * UNIT)
        with as_user(live, user) as http:
            credit = http.get("/api/wallet").json()["buckets"][0]
        assert (credit["balance_nanos"], credit["debt_nanos"], credit["debt"]) == (
            0,
            8 * UNIT,
            "8.00",
        )

    def test_requires_authentication(self, live: LiveServer) -> None:
        with live.client() as http:
            assert http.get("/api/wallet").status_code == 401
            assert http.get("/api/wallet/ledger").status_code == 401


class TestAdminWallet:
    def test_an_operator_sees_any_users_wallet(self, live: LiveServer) -> None:
        operator, user = live.make.operator(), live.make.user()
        live.make.topup(user.id, 3 * UNIT)
        with as_user(live, operator) as http:
            response = http.get(f"/admin/api/users/{user.id}/wallet")
        assert response.status_code == 200
        assert response.json()["user_id"] == user.id
        assert response.json()["buckets"][0]["balance"] == "3.00"

    def test_an_unknown_user_is_404(self, live: LiveServer) -> None:
        operator = live.make.operator()
        with as_user(live, operator) as http:
            response = http.get("/admin/api/users/999999/wallet")
        assert response.status_code == 404
        assert response.json()["error"] == {
            "code": "user_not_found",
            "message": "no user with id 999999",
            "param": None,
            "details": {},
        }


class TestLedgerHistory:
    def test_one_line_per_entry_newest_first_with_signed_amounts_and_balance_after(
        self, live: LiveServer
    ) -> None:
        user = live.make.user()
        first = live.make.topup(user.id, 5 * UNIT)
        live.clock.advance(60)
        second = live.make.topup(user.id, 5 * UNIT)
        live.clock.advance(60)
        # 7 units draw from both lots: two postings on the account, one entry, one line.
        usage = live.make.spend(user.id, 7 * UNIT)
        assert sum(p.lot_id is not None for p in usage.postings) == 2
        with as_user(live, user) as http:
            page = history(http)
        assert page["bucket"] == "credit"
        assert page["currency"] == "USD"
        assert page["next_cursor"] is None
        assert [line["entry_id"] for line in page["items"]] == [
            usage.entry_id,
            second.entry_id,
            first.entry_id,
        ]
        newest = page["items"][0]
        assert newest == {
            "entry_id": usage.entry_id,
            "time": "2026-01-01T00:02:00Z",
            "kind": "usage",
            "currency": "USD",
            "amount_nanos": -7 * UNIT,
            "amount": "-7.00",
            "balance_after_nanos": 3 * UNIT,
            "balance_after": "3.00",
            "cause_type": None,
            "cause_id": None,
            "memo": "",
        }
        assert [line["balance_after"] for line in page["items"]] == ["3.00", "10.00", "5.00"]
        assert page["items"][2]["cause_type"] == "order"
        assert page["items"][2]["memo"] == "sandbox top-up"

    def test_pages_are_stable_without_gaps_or_duplicates(self, live: LiveServer) -> None:
        user = live.make.user()
        ids = [live.make.topup(user.id, UNIT).entry_id for _ in range(7)]
        with as_user(live, user) as http:
            pages = all_pages(http, limit=3)
            assert pages == [ids[6:3:-1], ids[3:0:-1], ids[0:1]]
            # An entry written while paging lands on top; the next page continues unchanged.
            first = history(http, limit=3)
            live.make.topup(user.id, UNIT)
            second = history(http, limit=3, cursor=first["next_cursor"])
        assert [line["entry_id"] for line in second["items"]] == ids[3:0:-1]

    def test_shows_only_the_requested_bucket(self, live: LiveServer) -> None:
        user = live.make.user()
        credit = live.make.topup(user.id, UNIT)
        routed = live.make.topup(user.id, 2 * UNIT, bucket="routed")
        with as_user(live, user) as http:
            assert [x["entry_id"] for x in history(http)["items"]] == [credit.entry_id]
            page = history(http, bucket="routed")
        assert page["currency"] == "CNY"
        assert [(x["entry_id"], x["amount"]) for x in page["items"]] == [(routed.entry_id, "2.00")]

    def test_other_users_entries_never_appear(self, live: LiveServer) -> None:
        ann, bob = live.make.user(), live.make.user()
        live.make.topup(bob.id, UNIT)
        with as_user(live, ann) as http:
            assert history(http)["items"] == []

    def test_filters_by_kind(self, live: LiveServer) -> None:
        user = live.make.user()
        live.make.topup(user.id, 5 * UNIT)
        spent = [live.make.spend(user.id, UNIT).entry_id for _ in range(3)]
        with as_user(live, user) as http:
            assert all_pages(http, kind="usage", limit=2) == [spent[:0:-1], spent[:1]]

    def test_filters_by_a_half_open_time_range(self, live: LiveServer) -> None:
        user = live.make.user()
        at = {}
        for minute in range(4):
            at[minute] = live.make.topup(user.id, UNIT).entry_id
            live.clock.advance(60)
        start = dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
        with as_user(live, user) as http:
            page = history(
                http, since=start.isoformat(), until=(start + dt.timedelta(minutes=2)).isoformat()
            )
            naive_utc = history(http, since="2026-01-01T00:03:00")
        assert [x["entry_id"] for x in page["items"]] == [at[2], at[1]]
        assert [x["entry_id"] for x in naive_utc["items"]] == [at[3]]

    def test_an_unknown_bucket_is_a_422_naming_the_parameter(self, live: LiveServer) -> None:
        user = live.make.user()
        with as_user(live, user) as http:
            response = http.get("/api/wallet/ledger", params={"bucket": "gold"})
        assert response.status_code == 422
        assert response.json()["error"]["param"] == "bucket"
        assert "'credit' or 'routed'" in response.json()["error"]["message"]
