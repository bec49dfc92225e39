"""Operator console: the usage report (totals by model, route type, channel or project over a
range of UTC days, exactly the receipts' sums) and the exports page, whose every download works
in a browser session (cookie) — and refusals for users and bad filters."""

from __future__ import annotations

import csv
import datetime as dt
import io

import httpx
import orjson

from tallygate.exports import service as exports
from tallygate.web.render import money
from tests.fixtures.gateway import CHAT, World
from tests.web.helpers import session_client


def _ops(world: World) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(world.operator))


def _calls(world: World) -> list[dict[str, object]]:
    out = []
    with world.openai() as client:
        for model in (f"{CHAT}:official", f"{CHAT}:official", f"{CHAT}:routed"):
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "hello there"}]
            )
            out.append(world.receipt(raw.headers["x-request-id"]))
    return out


class TestUsageReport:
    def test_totals_per_dimension_are_the_receipts_sums(self, world: World) -> None:
        receipts = _calls(world)
        official = sum(int(r["charge_nanos"]) for r in receipts if r["route_type"] == "official")  # type: ignore[call-overload]
        routed = sum(int(r["charge_nanos"]) for r in receipts if r["route_type"] == "routed")  # type: ignore[call-overload]
        with _ops(world) as ops:
            by_route = ops.get("/operator/usage", params={"group": "route_type"})
            by_channel = ops.get("/operator/usage", params={"group": "channel"})
            only_routed = ops.get("/operator/usage", params={"route_type": "routed"})
        assert by_route.status_code == 200
        row = by_route.text.split('data-key="official"')[1].split("</tr>")[0]
        assert '<td class="num">2</td>' in row and money(official, "USD") in row
        assert f'data-testid="total-USD">{money(official, "USD")}<' in by_route.text
        assert f'data-testid="total-CNY">{money(routed, "CNY")}<' in by_route.text
        assert (
            'data-key="Official A"' in by_channel.text and 'data-key="Routed A"' in by_channel.text
        )
        assert 'data-testid="total-USD"' not in only_routed.text
        assert f'data-testid="total-CNY">{money(routed, "CNY")}<' in only_routed.text

    def test_the_day_range_is_half_open_and_the_csv_link_keeps_it(self, world: World) -> None:
        _calls(world)
        today = world.clock.now().astimezone(dt.UTC).date()
        tomorrow = today + dt.timedelta(days=1)
        with _ops(world) as ops:
            inside = ops.get(
                "/operator/usage",
                params={"since": today.isoformat(), "until": tomorrow.isoformat()},
            )
            after = ops.get("/operator/usage", params={"since": tomorrow.isoformat()})
            assert 'data-testid="total-USD"' in inside.text
            assert "No requests in this range" in after.text
            link = inside.text.split('href="/admin/api/exports/usage?')[1].split('"')[0]
            link = link.replace("&amp;", "&")
            assert f"since={today.isoformat()}T00%3A00%3A00Z" in link
            download = ops.get("/admin/api/exports/usage?" + link)
        assert download.status_code == 200 and download.headers["content-type"].startswith(
            "text/csv"
        )
        rows = list(csv.DictReader(io.StringIO(download.text)))
        assert sum(int(r["requests"]) for r in rows) == 3

    def test_bad_filters_are_readable_refusals(self, world: World) -> None:
        with _ops(world) as ops:
            for params in (
                {"group": "colour"},
                {"since": "yesterday"},
                {"since": "2026-01-02", "until": "2026-01-01"},
                {"route_type": "scenic"},
                {"user_id": "me"},
            ):
                response = ops.get("/operator/usage", params=params)
                assert response.status_code in (400, 422), params
                assert "Traceback" not in response.text


class TestExportsPage:
    def test_every_export_is_offered_and_downloads_with_the_session_cookie(
        self, world: World
    ) -> None:
        _calls(world)
        with _ops(world) as ops:
            page = ops.get("/operator/exports")
            assert page.status_code == 200
            for name in exports.OPERATOR_EXPORTS:
                assert f'data-export="{name}"' in page.text
                for fmt in exports.FORMATS:
                    response = ops.get(
                        "/operator/exports/download",
                        params={"name": name, "format": fmt, "since": "", "user_id": ""},
                        follow_redirects=True,
                    )
                    assert response.status_code == 200, (name, fmt, response.text)
                    assert response.headers["content-type"] == exports.FORMATS[fmt]
                    assert f"tallygate-{name}.{fmt}" in response.headers["content-disposition"]
            requests = ops.get(
                "/operator/exports/download",
                params={"name": "requests", "format": "jsonl", "route_type": "routed"},
                follow_redirects=True,
            )
            lines = [orjson.loads(x) for x in requests.text.splitlines() if x]
            assert len(lines) == 1 and lines[0]["route_type"] == "routed"
            statement = ops.get(
                "/admin/api/exports/statement",
                params={"user_id": world.user.id, "bucket": "credit"},
            )
            assert statement.status_code == 200

    def test_bad_forms_and_users_are_refused(self, world: World) -> None:
        with _ops(world) as ops:
            for params in (
                {"name": "passwords"},
                {"name": "ledger", "format": "xml"},
                {"name": "ledger", "user_id": "abc"},
                {"name": "ledger", "since": "soon"},
            ):
                response = ops.get("/operator/exports/download", params=params)
                assert response.status_code == 400, params
                assert "Traceback" not in response.text
        with session_client(world.base_url, world.make.session_token(world.user)) as user:
            for path in ("/operator/usage", "/operator/exports"):
                assert user.get(path).status_code == 403
            refused = user.get("/operator/exports/download", params={"name": "audit"})
            assert refused.status_code == 403
            assert user.get("/admin/api/exports/audit").status_code == 403
