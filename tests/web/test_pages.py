"""The user console's pages against a real gateway world: exact money with currency symbols and
bucket names, keys shown once, receipts with every field, the marketplace, and isolation."""

from __future__ import annotations

import re

import httpx

from tallygate.models.keys import api_keys
from tallygate.web.render import money
from tests.fixtures.gateway import (
    CHAT,
    OFFICIAL,
    OFFICIAL_CHAT,
    ROUTED,
    ROUTED_CHAT,
    START_BALANCE,
    World,
)
from tests.web.helpers import csrf_of, session_client

HI = [{"role": "user", "content": "hello there"}]


def as_user(world: World, user: object = None) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(user or world.user))  # type: ignore[arg-type]


def call(world: World, model: str = CHAT, key: str | None = None) -> str:
    with world.openai(key) as client:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HI)  # type: ignore[arg-type]
    request_id = raw.headers["x-request-id"]
    world.receipt(request_id)
    return str(request_id)


class TestMoneyFormat:
    def test_exact_amounts_keep_every_nano(self) -> None:
        assert money(5_000_000_000, "USD") == "$5.00"
        assert money(1_234_567_890_000, "USD") == "$1,234.56789"
        assert money(123, "USD") == "$0.000000123"
        assert money(-2_500_000_003, "CNY") == "-¥2.500000003"
        assert money(10_000_000, "SGD") == "0.01 SGD"


class TestWallet:
    def test_both_buckets_with_their_names_symbols_and_exact_balances(self, world: World) -> None:
        with as_user(world) as client:
            page = client.get("/")
        assert page.status_code == 200
        text = page.text
        assert 'id="bucket-credit">Credit <span class="currency">USD</span>' in text
        assert 'id="bucket-routed">Routed balance <span class="currency">CNY</span>' in text
        assert 'data-testid="balance-credit">$5.00<' in text
        assert 'data-testid="balance-routed">¥5.00<' in text
        assert text.count("+$5.00") == 1 and text.count("+¥5.00") == 1  # the top-up entries

    def test_a_request_appears_as_an_exact_usage_entry_with_its_receipt(self, world: World) -> None:
        request_id = call(world, ROUTED_CHAT)
        receipt = world.receipt(request_id)
        charge = receipt["charge_nanos"]
        with as_user(world) as client:
            text = client.get("/").text
        assert f'href="/receipts/{request_id}"' in text
        assert money(-charge, "CNY") in text
        assert f'data-testid="balance-routed">{money(START_BALANCE - charge, "CNY")}<' in text
        assert charge % 10_000_000 != 0  # odd prices: the exact figure, not a rounded one

    def test_held_money_is_not_available(self, world: World) -> None:
        world.make.hold(world.user.id, 4_500_000_000, key="in-flight", bucket="credit")
        with as_user(world) as client:
            text = client.get("/").text
        assert 'data-testid="available-credit">$0.50<' in text
        assert "Low Credit: $0.50 available" in text

    def test_debt_says_what_it_blocks(self, world: World) -> None:
        world.make.spend(world.user.id, 4_000_000_000, bucket="credit")
        world.make.refund(world.user.id, 3_000_000_000, bucket="credit")
        with as_user(world) as client:
            text = client.get("/").text
        assert "You owe <strong>$2.00</strong> on your Credit" in text
        assert "New requests paid from the Credit are refused" in text

    def test_expiring_promotional_credit_shows_what_is_left_and_when(self, world: World) -> None:
        with world.as_operator() as ops:
            made = ops.post(
                "/admin/api/credits/campaigns",
                json={
                    "name": "Spring promo",
                    "bucket": "routed",
                    "amount": "3",
                    "credit_expires_at": "2026-03-01T12:00:00Z",
                },
            )
            assert made.status_code == 201, made.text
            codes = ops.post(f"/admin/api/credits/campaigns/{made.json()['id']}/codes", json={})
            assert codes.status_code == 201, codes.text
            code = codes.json()["codes"][0]["code"]
        with world.as_user() as api:
            assert api.post("/api/credits/redeem", json={"code": code}).status_code == 201
        with as_user(world) as client:
            fresh = client.get("/").text
            ledger = client.get("/ledger", params={"bucket": "routed", "kind": "redeem"}).text
            redeem = client.get("/redeem").text
        cause = re.search(r'href="/redeem#(redemption-\d+)"', ledger)
        assert cause is not None and f'<tr id="{cause.group(1)}">' in redeem
        world.make.spend(world.user.id, 1_250_000_000, bucket="routed")  # the promo goes first
        with as_user(world) as client:
            spent = client.get("/").text
        assert "<h3>Expiring credit</h3>" in fresh
        assert 'data-testid="expiring-credit"' not in fresh
        assert "<strong>¥3.00</strong>" in fresh and "promotional credit (Spring promo (" in fresh
        assert "2026-03-01 12:00 UTC" in fresh
        assert "<strong>¥1.75</strong> left of ¥3.00" in spent

    def test_the_ledger_page_filters_by_bucket_and_kind(self, world: World) -> None:
        call(world, ROUTED_CHAT)
        with as_user(world) as client:
            usage = client.get("/ledger", params={"bucket": "routed", "kind": "usage"}).text
            topups = client.get("/ledger", params={"bucket": "routed", "kind": "topup"}).text
        assert ">usage<" in usage and ">topup<" not in usage
        assert ">topup<" in topups and "+¥5.00" in topups

    def test_the_kind_filter_offers_the_real_entry_kinds_and_refuses_others(
        self, world: World
    ) -> None:
        with as_user(world) as client:
            page = client.get("/ledger", params={"kind": "topup"}).text
            bad = client.get("/ledger", params={"kind": "lottery"})
        assert '<select id="kind" name="kind">' in page
        assert '<option value="">every kind</option>' in page
        assert '<option value="topup" selected>top-ups</option>' in page
        for kind in ("usage", "redeem", "grant", "refund", "adjustment", "expiry"):
            assert f'<option value="{kind}" >' in page
        assert bad.status_code == 400 and "unknown entry kind" in bad.text and "lottery" in bad.text
        assert "Traceback" not in bad.text

    def test_the_ledger_filters_by_day(self, world: World) -> None:
        with as_user(world) as client:
            today = client.get("/ledger", params={"since": "2026-01-01", "until": "2026-01-01"})
            later = client.get("/ledger", params={"since": "2026-01-02", "until": ""})
            bad = client.get("/ledger", params={"since": "soon"})
        assert "+$5.00" in today.text
        assert later.status_code == 200 and "+$5.00" not in later.text
        assert bad.status_code == 400 and "since must be a date" in bad.text

    def test_low_balance_names_the_cost_of_typical_requests(self, world: World) -> None:
        world.make.spend(world.user.id, 4_500_000_000, bucket="credit")
        with as_user(world) as client:
            text = client.get("/").text
        typical = -(-(1_000 * OFFICIAL.input + 500 * OFFICIAL.output) // 1_000_000)
        assert "Low Credit: $0.50 available" in text
        assert f"{money(typical, 'USD')} on <code>tg-chat:official</code>" in text

    def test_the_ledger_downloads_as_csv_with_the_session_cookie(self, world: World) -> None:
        call(world, ROUTED_CHAT)
        with as_user(world) as client:
            page = client.get("/ledger", params={"bucket": "routed"}).text
            href = re.search(r'href="(/api/exports/ledger[^"]+)"', page)
            assert href is not None
            csv = client.get(href.group(1).replace("&amp;", "&"))
        assert csv.status_code == 200 and "text/csv" in csv.headers["content-type"]
        assert "usage" in csv.text and "topup" in csv.text

    def test_the_ledger_csv_keeps_the_pages_day_range(self, world: World) -> None:
        world.clock.advance(2 * 86_400)
        world.make.spend(world.user.id, 1_234_567_891, bucket="credit")  # 2026-01-03
        with as_user(world) as client:
            page = client.get("/ledger", params={"since": "2026-01-01", "until": "2026-01-02"})
            href = re.search(r'href="(/api/exports/ledger[^"]+)"', page.text)
            assert href is not None
            assert "until=2026-01-03T00:00:00Z" in href.group(1)
            csv = client.get(href.group(1).replace("&amp;", "&"))
        assert "+$5.00" in page.text and "1.234567891" not in page.text
        assert csv.status_code == 200
        assert "topup" in csv.text and "usage" not in csv.text and "1.234567891" not in csv.text


class TestHeaders:
    def test_pages_allow_nothing_from_outside_and_no_framing(self, world: World) -> None:
        with as_user(world) as client:
            response = client.get("/")
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "https://" not in response.text and "http://" not in response.text


class TestKeys:
    def test_a_new_key_is_shown_once_and_works(self, world: World) -> None:
        with as_user(world) as client:
            token = csrf_of(client.get("/keys"))
            created = client.post(
                "/keys",
                data={
                    "csrf_token": token,
                    "label": "laptop",
                    "project": "alpha",
                    "route_types": "routed",
                },
            )
            assert created.status_code == 201
            key = re.search(r'id="new-key" readonly value="([^"]+)"', created.text)
            assert key is not None
            full = key.group(1)
            assert "only time the full key is shown" in created.text
            assert f'api_key="{full}"' in created.text
            assert 'model="tg-chat:routed"' in created.text  # a model this key may call
            assert f'base_url="{world.base_url}/v1"' in created.text
            listing = client.get("/keys").text
        assert full not in listing
        assert "laptop" in listing and "alpha" in listing
        request_id = call(world, ROUTED_CHAT, key=full)
        charge = world.receipt(request_id)["charge_nanos"]
        with as_user(world) as client:
            listing = client.get("/keys").text
        assert f"Routed balance: {money(charge, 'CNY')}" in listing

    def test_limits_expiry_and_default_route_are_set_from_the_form(self, world: World) -> None:
        with as_user(world) as client:
            token = csrf_of(client.get("/keys"))
            fields = {
                "csrf_token": token,
                "label": "capped",
                "default_route_type": "routed",
                "expires_on": "2026-02-01",
                "routed_limit": "2.5",
                "rpm_limit": "30",
            }
            created = client.post("/keys", data=fields)
            bad_rpm = client.post("/keys", data={**fields, "rpm_limit": "many"})
            past = client.post("/keys", data={**fields, "expires_on": "2025-01-01"})
            bad_date = client.post("/keys", data={**fields, "expires_on": "someday"})
        assert created.status_code == 201
        assert "of ¥2.50" in created.text and "expires 2026-02-01 00:00:00 UTC" in created.text
        for refused in (bad_rpm, past, bad_date):
            assert refused.status_code == 400, refused.text
            assert 'role="alert"' in refused.text and "Traceback" not in refused.text

    def test_revoke_is_a_csrf_checked_form(self, world: World) -> None:
        key_id, _ = world.new_key(label="doomed")
        with as_user(world) as client:
            assert client.post(f"/keys/{key_id}/revoke").status_code == 403
            token = csrf_of(client.get("/keys"))
            done = client.post(f"/keys/{key_id}/revoke", data={"csrf_token": token})
            assert done.status_code == 303
            assert "revoked" in client.get("/keys").text


class TestReceipts:
    def test_the_list_and_a_receipt_with_every_field(self, world: World) -> None:
        request_id = call(world, OFFICIAL_CHAT)
        r = world.receipt(request_id)
        with as_user(world) as client:
            listing = client.get("/receipts").text
            page = client.get(f"/receipts/{request_id}")
        assert request_id in listing and ">official<" in listing and ">Credit<" in listing
        assert page.status_code == 200
        text = page.text
        assert f'data-testid="charge">{money(r["charge_nanos"], "USD")}<' in text
        assert f"#{r['entry_id']}" in text
        assert money(OFFICIAL.input, "USD") in text  # the applied price, exactly
        assert r["upstream_model"] in text and r["channel"] in text
        assert "Attempts" in text and f"{r['input_tokens']} in" in text

    def test_filters_by_status_and_model(self, world: World) -> None:
        request_id = call(world, CHAT)
        with as_user(world) as client:
            assert request_id in client.get("/receipts", params={"status": "ok"}).text
            assert request_id not in client.get("/receipts", params={"model": "nope"}).text


class TestMarketplace:
    def test_prices_per_route_in_each_buckets_currency(self, world: World) -> None:
        world.new_key(label="routed-only", allowed_route_types=["routed"])
        with as_user(world) as client:
            text = client.get("/marketplace").text
            none = client.get("/marketplace", params={"q": "zzz"}).text
        assert "tg-chat:official" in text and "tg-chat:routed" in text
        assert money(OFFICIAL.input, "USD") in text
        assert money(ROUTED.output, "CNY") in text
        assert "routed-only" in text
        assert "tg-chat" not in none

    def test_filters_by_route_type_and_by_my_keys(self, world: World) -> None:
        with as_user(world) as client:
            routed = client.get("/marketplace", params={"route": "routed"}).text
            official = client.get("/marketplace", params={"route": "official"}).text
        assert '<option value="routed" selected>' in routed
        assert "tg-chat:routed" in routed and "tg-chat:official" not in routed
        assert "tg-chat:official" in official and "tg-chat:routed" not in official
        # revoke every key: no offer is usable by one of my keys any more
        with world.db.begin() as conn:
            conn.execute(api_keys.update().values(revoked_at=world.now_us()))
        with as_user(world) as client:
            mine = client.get("/marketplace", params={"mine": "1"}).text
            everything = client.get("/marketplace").text
            bad = client.get("/marketplace", params={"route": "teleport"})
        assert 'id="mine" name="mine" value="1" checked' in mine
        assert "tg-chat" not in mine and "No models match these filters" in mine
        assert "tg-chat:official" in everything
        assert bad.status_code == 400 and "unknown route type" in bad.text
        assert "Traceback" not in bad.text


class TestIsolation:
    def test_another_users_receipt_key_and_ledger_stay_out_of_reach(self, world: World) -> None:
        request_id = call(world, CHAT)
        key_id, _ = world.new_key(label="ann-key")
        mallory = world.new_user(credit=1_000_000_000)
        with as_user(world, mallory) as client:
            assert request_id not in client.get("/receipts").text
            peek = client.get(f"/receipts/{request_id}")
            assert peek.status_code == 404
            assert "ann-key" not in client.get("/keys").text
            token = csrf_of(client.get("/keys"))
            act = client.post(f"/keys/{key_id}/revoke", data={"csrf_token": token})
            assert act.status_code == 404
            wallet = client.get("/").text
            assert 'data-testid="balance-credit">$1.00<' in wallet
            assert request_id not in wallet
        with as_user(world) as client:
            assert "revoked" not in client.get("/keys").text


class TestErrors:
    def test_bad_input_gets_a_readable_page_without_a_stack_trace(self, world: World) -> None:
        with as_user(world) as client:
            for path in (
                "/receipts?cursor=abc",
                "/receipts/does-not-exist",
                "/ledger?bucket=gold",
                "/keys/0/revoke",
                "/?order=x",
                "/?order=no-such-order",
                "/nowhere",
            ):
                response = client.get(path)
                assert 400 <= response.status_code < 500, (path, response.status_code)
                assert "text/html" in response.headers["content-type"]
                assert "Traceback" not in response.text and 'File "' not in response.text

    def test_signed_out_visitors_are_sent_to_sign_in(self, world: World) -> None:
        with httpx.Client(base_url=world.base_url) as client:
            for path in ("/", "/keys", "/receipts", "/marketplace", "/ledger"):
                response = client.get(path)
                assert response.status_code == 303
                assert response.headers["location"].startswith("/login")
