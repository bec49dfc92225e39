"""Claiming redeem codes over HTTP against a running server, on both databases: what a claim
returns and writes, one distinct refusal per reason (each writing nothing), the failed-claim
limit, disabling and deleting codes."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from sqlalchemy import select

from tallygate.audit import service as audit
from tallygate.credits import codes
from tallygate.models.credits import redeem_codes, redemptions
from tallygate.models.ledger import entries, lots
from tests.credits.conftest import (
    UNIT,
    as_operator,
    as_user,
    campaign,
    create_campaign,
    generate,
    redeem,
    row_counts,
)
from tests.fixtures.server import LiveServer


class TestClaim:
    def test_a_claim_credits_the_bucket_and_leaves_a_full_trail(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(
                ops, name="Spring", bucket="routed", amount="12.5", credit_ttl_seconds=3600
            )
            (code,) = generate(ops, made["id"], prefix="spring")
        user = live.make.user()
        with as_user(live, user) as http:
            response = redeem(http, code)
            assert response.status_code == 201, response.text
            claimed = response.json()
            history = http.get("/api/credits/redemptions").json()["items"]
            wallet = http.get("/api/wallet").json()
        now = live.clock.now()
        assert claimed["campaign"] == "Spring"
        assert claimed["bucket"] == "routed" and claimed["routes"] == ["routed"]
        assert claimed["currency"] == "CNY"
        assert (claimed["amount_nanos"], claimed["amount"]) == (12_500_000_000, "12.50")
        assert claimed["balance_nanos"] == 12_500_000_000 == claimed["available_nanos"]
        assert claimed["code_prefix"] == code[: len("SPRING-XXXX")]
        assert dt.datetime.fromisoformat(claimed["expires_at"]) == now + dt.timedelta(hours=1)
        assert [h["id"] for h in history] == [claimed["id"]]
        assert history[0]["entry_id"] == claimed["entry_id"]
        assert str(wallet).count("12.5") >= 1
        with live.db.read() as conn:
            entry = conn.execute(select(entries).where(entries.c.id == claimed["entry_id"]))
            e = entry.mappings().one()
            lot = conn.execute(select(lots).where(lots.c.id == claimed["lot_id"])).mappings().one()
        assert (e["kind"], e["cause_type"], e["cause_id"]) == (
            "redeem",
            "redemption",
            str(claimed["id"]),
        )
        assert lot["kind"] == "promo" and lot["original_nanos"] == 12_500_000_000
        assert lot["source_entry_id"] == e["id"]
        assert lot["expires_at"] is not None

    def test_codes_are_typeable_and_normalised_on_input(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="1")
            (code,) = generate(ops, made["id"], prefix="WELCOME")
        assert code.startswith("WELCOME-")
        groups = code.split("-")[1:]
        assert [len(g) for g in groups] == [4, 4, 4, 4]
        assert all(ch in codes.ALPHABET for ch in "".join(groups))
        typed = " " + code.lower().replace("-", " ").replace("0", "o").replace("1", "l") + " "
        with as_user(live, live.make.user()) as http:
            assert redeem(http, typed).status_code == 201

    def test_only_an_hmac_of_the_code_and_its_visible_prefix_are_stored(
        self, live: LiveServer
    ) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="1")
            response = ops.post(
                f"/admin/api/credits/campaigns/{made['id']}/codes", json={"count": 3}
            )
            listed = ops.get(f"/admin/api/credits/campaigns/{made['id']}/codes").json()
        generated = response.json()["codes"]
        with live.db.read() as conn:
            stored = [dict(r) for r in conn.execute(select(redeem_codes)).mappings()]
        secret = live.app.state.tallygate.settings.secret_key
        key = hashlib.sha256(b"tallygate redeem codes v1" + secret.encode()).digest()
        for g, row in zip(generated, stored, strict=True):
            expected = hmac.new(key, codes.normalise(g["code"]).encode(), "sha256").hexdigest()
            assert row["digest"] == expected
            assert row["prefix"] == g["prefix"] == g["code"][:4]
            assert g["code"] not in str(stored) and g["code"] not in str(listed)
        assert len({g["code"] for g in generated}) == 3

    def test_codes_download_as_csv_once(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, name="CSV", amount="1")
            response = ops.post(
                f"/admin/api/credits/campaigns/{made['id']}/codes?format=csv",
                json={"count": 2, "prefix": "CSV"},
            )
        assert response.status_code == 201
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        header, *rows = response.text.strip().split("\r\n")
        assert header == "code,prefix,campaign_id,campaign"
        assert len(rows) == 2 and all(r.startswith("CSV-") for r in rows)


class TestRefusals:
    def test_each_reason_has_its_own_code_and_message_and_writes_nothing(
        self, live: LiveServer
    ) -> None:
        now = live.clock.now()
        with as_operator(live) as ops:
            plain = create_campaign(ops, name="Plain", amount="1")
            (single,) = generate(ops, plain["id"])
            (other,) = generate(ops, plain["id"])
            off = create_campaign(ops, name="Off", amount="1")
            (disabled,) = generate(ops, off["id"])
            ops.post(f"/admin/api/credits/campaigns/{off['id']}/disable")
            later = create_campaign(
                ops, name="Later", amount="1", valid_from=(now + dt.timedelta(days=1)).isoformat()
            )
            (not_yet,) = generate(ops, later["id"])
            past = create_campaign(
                ops,
                name="Past",
                amount="1",
                valid_from=(now - dt.timedelta(days=2)).isoformat(),
                valid_until=(now - dt.timedelta(days=1)).isoformat(),
            )
            (expired,) = generate(ops, past["id"])
        first, second = live.make.user(), live.make.user()
        with as_user(live, first) as http:
            assert redeem(http, single).status_code == 201
        seen: dict[str, tuple[int, str]] = {}
        with as_user(live, first) as a, as_user(live, second) as b:
            before = row_counts(live.db)
            for name, client, code in [
                ("unknown", b, "NOPE-0000-0000-0000-0000"),
                ("garbage", b, "!!!"),
                ("already", a, other),
                ("exhausted", b, single),
                ("disabled", b, disabled),
                ("not_yet", b, not_yet),
                ("expired", b, expired),
            ]:
                response = redeem(client, code)
                error = response.json()["error"]
                seen[name] = (response.status_code, error["code"])
                assert error["message"]
            assert row_counts(live.db) == before
        assert seen == {
            "unknown": (404, "unknown_code"),
            "garbage": (404, "unknown_code"),
            "already": (409, "already_claimed"),
            "exhausted": (409, "code_exhausted"),
            "disabled": (409, "code_disabled"),
            "not_yet": (409, "code_not_yet_valid"),
            "expired": (409, "code_expired"),
        }

    def test_the_same_account_cannot_claim_a_shared_code_twice(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="2")
            (shared,) = generate(ops, made["id"], shared=True)
        with as_user(live, live.make.user()) as a, as_user(live, live.make.user()) as b:
            assert redeem(a, shared).status_code == 201
            assert redeem(b, shared).status_code == 201
            again = redeem(a, shared)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "already_claimed"

    def test_a_per_account_limit_above_one_allows_that_many_claims(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="1", per_account_limit=2)
            (shared,) = generate(ops, made["id"], shared=True)
        with as_user(live, live.make.user()) as http:
            results = [redeem(http, shared).status_code for _ in range(3)]
        assert results == [201, 201, 409]


class TestRateLimit:
    def test_ten_failures_lock_the_account_even_for_a_valid_code(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="1")
            (valid,) = generate(ops, made["id"])
        user = live.make.user()
        with as_user(live, user) as http:
            statuses = [redeem(http, f"BAD-{i:04d}").status_code for i in range(10)]
            before = row_counts(live.db)
            locked = redeem(http, valid)
            assert row_counts(live.db) == before
            assert statuses == [404] * 10
            assert locked.status_code == 429
            assert locked.json()["error"]["code"] == "rate_limited"
            assert int(locked.headers["Retry-After"]) == 600
            live.clock.advance(300)
            assert int(redeem(http, valid).headers["Retry-After"]) == 300
            live.clock.advance(301)
            assert redeem(http, valid).status_code == 201

    def test_failures_count_per_client_address_across_accounts(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="1")
            (valid,) = generate(ops, made["id"])
        for _ in range(2):
            with as_user(live, live.make.user()) as http:
                for i in range(5):
                    assert redeem(http, f"BAD-{i:04d}").status_code == 404
        with as_user(live, live.make.user()) as fresh:
            refused = redeem(fresh, valid)
        assert refused.status_code == 429
        assert "address" in refused.json()["error"]["message"]


class TestOperatorActions:
    def test_disabling_stops_new_claims_but_history_stays(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="3")
            (shared,) = generate(ops, made["id"], shared=True)
            claimer = live.make.user()
            with as_user(live, claimer) as http:
                claimed = redeem(http, shared).json()
            (code_row,) = ops.get(f"/admin/api/credits/campaigns/{made['id']}/codes").json()[
                "items"
            ]
            disabled = ops.post(f"/admin/api/credits/codes/{code_row['id']}/disable", json={})
            with as_user(live, live.make.user()) as http:
                refused = redeem(http, shared)
            with as_user(live, claimer) as http:
                mine = http.get("/api/credits/redemptions").json()["items"]
            history = ops.get(f"/admin/api/credits/campaigns/{made['id']}/redemptions").json()
            stats = campaign(ops, made["id"])["stats"]
        assert disabled.json()["status"] == "disabled"
        assert refused.json()["error"]["code"] == "code_disabled"
        assert [m["id"] for m in mine] == [claimed["id"]]
        assert [h["id"] for h in history["items"]] == [claimed["id"]]
        assert stats["redemptions"] == 1 and stats["credited_nanos"] == 3 * UNIT
        assert stats["unspent_nanos"] == 3 * UNIT

    def test_only_never_redeemed_codes_can_be_deleted(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="1")
            used, unused = generate(ops, made["id"], count=2)
            with as_user(live, live.make.user()) as http:
                assert redeem(http, used).status_code == 201
            items = ops.get(f"/admin/api/credits/campaigns/{made['id']}/codes").json()["items"]
            by_prefix = {i["prefix"]: i for i in items}
            used_row, unused_row = by_prefix[used[:4]], by_prefix[unused[:4]]
            refused = ops.delete(f"/admin/api/credits/codes/{used_row['id']}")
            deleted = ops.delete(f"/admin/api/credits/codes/{unused_row['id']}?reason=typo")
            left = ops.get(f"/admin/api/credits/campaigns/{made['id']}/codes").json()["items"]
            with as_user(live, live.make.user()) as http:
                gone = redeem(http, unused)
        assert (used_row["deletable"], unused_row["deletable"]) == (False, True)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "code_redeemed"
        assert deleted.status_code == 204
        assert [i["id"] for i in left] == [used_row["id"]]
        assert gone.json()["error"]["code"] == "unknown_code"
        with live.db.read() as conn:
            assert len(conn.execute(select(redemptions)).all()) == 1

    def test_every_operator_action_is_audited_and_the_chain_verifies(
        self, live: LiveServer
    ) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, amount="1")
            a, _b = generate(ops, made["id"], count=2)
            codes_list = ops.get(f"/admin/api/credits/campaigns/{made['id']}/codes").json()
            first, second = codes_list["items"]
            ops.post(f"/admin/api/credits/codes/{first['id']}/disable", json={"reason": "leak"})
            ops.delete(f"/admin/api/credits/codes/{second['id']}")
            ops.post(f"/admin/api/credits/campaigns/{made['id']}/disable", json={"reason": "end"})
        with live.db.read() as conn:
            tx = live.ledger.tx(conn)
            actions = [r[0] for r in tx.all("SELECT action FROM audit_events ORDER BY seq")]
            assert audit.verify(tx) == []
            logged = str(tx.all("SELECT before_json, after_json FROM audit_events"))
        assert actions[-5:] == [
            "campaign.create",
            "code.generate",
            "code.disable",
            "code.delete",
            "campaign.disable",
        ]
        assert a not in logged

    def test_redemption_history_exports_as_csv(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            made = create_campaign(ops, name="Export", amount="4.2")
            (code,) = generate(ops, made["id"], prefix="EXP")
            user = live.make.user()
            with as_user(live, user) as http:
                claimed = redeem(http, code).json()
            response = ops.get(f"/admin/api/credits/campaigns/{made['id']}/redemptions.csv")
        assert response.status_code == 200
        header, row = response.text.strip().split("\r\n")
        columns = header.split(",")
        values = dict(zip(columns, row.split(","), strict=True))
        assert values["code_prefix"] == claimed["code_prefix"]
        assert values["email"] == user.email
        assert values["amount"] == "4.20"
        assert values["entry_id"] == str(claimed["entry_id"])
        assert values["created_at"].endswith("Z")

    def test_campaign_input_is_validated_before_anything_is_written(self, live: LiveServer) -> None:
        with as_operator(live) as ops:
            before = row_counts(live.db)
            bad = [
                {"name": " ", "bucket": "routed", "amount": "1"},
                {"name": "x", "bucket": "routed", "amount": "0"},
                {"name": "x", "bucket": "routed", "amount": "0.0000000001"},
                {
                    "name": "x",
                    "bucket": "routed",
                    "amount": "1",
                    "kind": "starter",
                    "per_account_limit": 2,
                },
                {"name": "x", "bucket": "routed", "amount": "1", "per_address_limit": 3},
                {
                    "name": "x",
                    "bucket": "routed",
                    "amount": "1",
                    "valid_from": "2026-02-01T00:00:00Z",
                    "valid_until": "2026-01-01T00:00:00Z",
                },
            ]
            statuses = [ops.post("/admin/api/credits/campaigns", json=b).status_code for b in bad]
            users = as_user(live, live.make.user())
            forbidden = users.post("/admin/api/credits/campaigns", json={"name": "x"})
            users.close()
        assert statuses == [400] * len(bad)
        assert forbidden.status_code == 403
        assert row_counts(live.db) == before
