"""Operator console: campaigns and codes — create a campaign, generate codes shown once or as a
CSV download, the redemption list and exact spend stats, disable/enable a campaign, disable a
code, delete unused codes (a redeemed one is refused) — and refusals that write nothing."""

from __future__ import annotations

import csv
import io
import re

import httpx
from sqlalchemy import func, select

from tallygate.models.credits import campaigns as campaigns_table
from tallygate.models.credits import redeem_codes
from tallygate.web.render import money
from tests.fixtures.gateway import CHAT, World
from tests.web.helpers import csrf_of, session_client, submit


def _ops(world: World) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(world.operator))


def _count(world: World, table: object) -> int:
    with world.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _campaign(ops: httpx.Client, **fields: str) -> int:
    form = {"name": "Spring", "kind": "codes", "bucket": "credit", "amount": "0.25", **fields}
    made = submit(ops, "/operator/campaigns", "/operator/campaigns", **form)
    assert made.status_code == 303, made.text
    found = re.search(r"/operator/campaigns/(\d+)", made.headers["location"])
    assert found
    return int(found.group(1))


def _generate(ops: httpx.Client, cid: int, **fields: str) -> httpx.Response:
    return submit(ops, f"/operator/campaigns/{cid}", f"/operator/campaigns/{cid}/codes", **fields)


def _shown_codes(page: httpx.Response) -> list[str]:
    box = page.text.split('id="gen-codes"')[1].split("</textarea>")[0]
    return [line.strip() for line in box.split(">", 1)[1].splitlines() if line.strip()]


class TestCampaignPages:
    def test_create_generate_redeem_spend_and_see_the_stats(self, world: World) -> None:
        with _ops(world) as ops:
            cid = _campaign(ops, total_cap="5", credit_ttl_days="30")
            shown = _generate(ops, cid, count="3", prefix="SPRING", format="page")
            assert shown.status_code == 200
            assert "shown this once" in shown.text
            codes = _shown_codes(shown)
            assert len(codes) == 3 and all(c.startswith("SPRING") for c in codes)
            again = ops.get(f"/operator/campaigns/{cid}")
            assert all(c not in again.text for c in codes)  # never shown again
        newcomer = world.new_user()
        with world.as_user(newcomer) as user:
            redeemed = user.post("/api/credits/redeem", json={"code": codes[0]})
            assert redeemed.status_code == 201, redeemed.text
        _, key = world.new_key(newcomer)
        with world.openai(key) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}]
            )
        charge = world.receipt(raw.headers["x-request-id"])["charge_nanos"]
        with _ops(world) as ops:
            page = ops.get(f"/operator/campaigns/{cid}").text
            listing = ops.get("/operator/campaigns").text
            link = f"/admin/api/credits/campaigns/{cid}/redemptions.csv"
            assert f'href="{link}"' in page
            redemptions = ops.get(link)  # the page's link works with the session cookie
        assert redemptions.status_code == 200
        assert newcomer.email in redemptions.text and codes[0] not in redemptions.text
        assert 'data-testid="redemptions">1 of 5<' in page
        assert 'data-testid="credited">$0.25<' in page
        assert (
            f'data-testid="spent">{money(charge, "USD")} <span class="hint">by 1 requests' in page
        )
        assert f'data-testid="unspent">{money(250_000_000 - charge, "USD")} ' in page
        assert newcomer.email in page and raw.headers["x-request-id"] in page
        row = listing.split(f'data-campaign="{cid}"')[1].split("</tr>")[0]
        assert "Spring" in row and "$0.25" in row and money(charge, "USD") in row

    def test_codes_download_as_csv_from_the_generating_request(self, world: World) -> None:
        with _ops(world) as ops:
            cid = _campaign(ops)
            before = _count(world, redeem_codes)
            download = _generate(ops, cid, count="4", prefix="CSV", format="csv")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        assert f"campaign-{cid}-codes.csv" in download.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(download.text)))
        assert len(rows) == 4 and all(r["code"].startswith("CSV") for r in rows)
        assert {r["campaign_id"] for r in rows} == {str(cid)}
        assert _count(world, redeem_codes) == before + 4
        with world.as_user() as user:
            assert (
                user.post("/api/credits/redeem", json={"code": rows[1]["code"]}).status_code == 201
            )

    def test_disable_campaign_and_code_and_delete_only_unused_codes(self, world: World) -> None:
        with _ops(world) as ops:
            cid = _campaign(ops)
            codes = _shown_codes(_generate(ops, cid, count="3", format="page"))
            with world.as_user() as user:
                assert user.post("/api/credits/redeem", json={"code": codes[0]}).status_code == 201
            with world.db.read() as conn:
                ids = [
                    int(i)
                    for i in conn.execute(
                        select(redeem_codes.c.id)
                        .where(redeem_codes.c.campaign_id == cid)
                        .order_by(redeem_codes.c.id)
                    ).scalars()
                ]
            page = ops.get(f"/operator/campaigns/{cid}").text
            assert f'action="/operator/codes/{ids[0]}/delete"' not in page  # redeemed
            assert f'action="/operator/codes/{ids[1]}/delete"' in page
            refused = submit(
                ops,
                f"/operator/campaigns/{cid}",
                f"/operator/codes/{ids[0]}/delete",
                campaign_id=str(cid),
            )
            assert refused.status_code == 409 and "stays traceable" in refused.text
            deleted = submit(
                ops,
                f"/operator/campaigns/{cid}",
                f"/operator/codes/{ids[1]}/delete",
                campaign_id=str(cid),
            )
            assert deleted.status_code == 303
            assert "Unused code deleted" in ops.get(deleted.headers["location"]).text
            disabled = submit(
                ops, f"/operator/campaigns/{cid}", f"/operator/codes/{ids[2]}/disable"
            )
            assert disabled.status_code == 303
            other = world.new_user()
            with world.as_user(other) as user:
                gone = user.post("/api/credits/redeem", json={"code": codes[2]})
                assert gone.status_code >= 400 and "disabled" in gone.text
            off = submit(
                ops,
                f"/operator/campaigns/{cid}",
                f"/operator/campaigns/{cid}/disable",
                reason="ended early",
            )
            assert off.status_code == 303
            assert "Campaign disabled" in ops.get(off.headers["location"]).text
            more = _shown_codes(_generate(ops, cid, count="1", format="page"))
            with world.as_user(other) as user:
                assert user.post("/api/credits/redeem", json={"code": more[0]}).status_code >= 400
            on = submit(ops, f"/operator/campaigns/{cid}", f"/operator/campaigns/{cid}/enable")
            assert on.status_code == 303
            with world.as_user(other) as user:
                assert user.post("/api/credits/redeem", json={"code": more[0]}).status_code == 201
        with world.db.read() as conn:
            left = conn.execute(
                select(func.count())
                .select_from(redeem_codes)
                .where(redeem_codes.c.campaign_id == cid)
            ).scalar_one()
        assert left == 3  # 3 + 1 generated, 1 deleted

    def test_bad_input_is_refused_and_writes_nothing(self, world: World) -> None:
        with _ops(world) as ops:
            cid = _campaign(ops)
            before = (_count(world, campaigns_table), _count(world, redeem_codes))
            for fields, words in (
                ({"amount": "-1"}, "positive"),
                ({"amount": "abc"}, "amount"),
                ({"bucket": "gold"}, "Routed balance"),
                ({"total_cap": "many"}, "whole number"),
                ({"valid_until": "tomorrow"}, "date"),
            ):
                form = {"name": "Bad", "kind": "codes", "bucket": "credit", "amount": "1", **fields}
                refused = submit(ops, "/operator/campaigns", "/operator/campaigns", **form)
                assert refused.status_code == 400, (fields, refused.status_code)
                assert words in refused.text and "Traceback" not in refused.text
                assert 'value="Bad"' in refused.text
            for fields in ({"count": "0"}, {"count": "20000"}, {"prefix": "no spaces!"}):
                refused = _generate(ops, cid, **{"count": "1", "format": "page", **fields})
                assert refused.status_code == 400 and 'class="alert error"' in refused.text
            assert ops.get("/operator/campaigns/999999").status_code == 404
        assert (_count(world, campaigns_table), _count(world, redeem_codes)) == before

    def test_users_and_forged_forms_are_refused(self, world: World) -> None:
        with _ops(world) as ops:
            cid = _campaign(ops)
        before = (_count(world, campaigns_table), _count(world, redeem_codes))
        with world.as_user() as api:
            assert api.get("/admin/api/credits/campaigns").status_code == 403
        with session_client(world.base_url, world.make.session_token(world.user)) as user:
            for path in ("/operator/campaigns", f"/operator/campaigns/{cid}"):
                assert user.get(path).status_code == 403
            token = csrf_of(user.get("/keys"))
            assert (
                user.post(
                    f"/operator/campaigns/{cid}/codes",
                    data={"csrf_token": token, "count": "5", "format": "csv"},
                ).status_code
                == 403
            )
        with _ops(world) as ops:
            forged = ops.post(
                f"/operator/campaigns/{cid}/codes", data={"csrf_token": "x", "count": "5"}
            )
            assert forged.status_code == 403
        assert (_count(world, campaigns_table), _count(world, redeem_codes)) == before
