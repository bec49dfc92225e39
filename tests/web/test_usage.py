"""The usage page: receipts filtered by key, project, model, route type, status and a half-open
range of UTC days, the CSV of exactly those, and the chart of spend per day, bucket and model
(inline SVG) with its exact figures in a table. Against the gateway world on both databases."""

from __future__ import annotations

import csv
import io
import re

import httpx
import openai
import pytest

from tallygate.web.render import money
from tests.fixtures.gateway import CHAT, OFFICIAL_CHAT, ROUTED_CHAT, World
from tests.web.helpers import session_client

HI = [{"role": "user", "content": "hello usage"}]


def as_user(world: World) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(world.user))


def call(world: World, model: str, key: str | None = None) -> str:
    with world.openai(key) as client:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HI)  # type: ignore[arg-type]
    request_id = str(raw.headers["x-request-id"])
    world.receipt(request_id)
    return request_id


def failed_call(world: World, model: str) -> str:
    world.primary.fault("http_500")
    world.backup.fault("http_500")
    with world.openai() as client, pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    request_id = str(refused.value.response.headers["x-request-id"])
    world.receipt(request_id)
    return request_id


def listed(page: httpx.Response) -> set[str]:
    assert page.status_code == 200, page.text
    return set(re.findall(r'href="/receipts/(req_[0-9a-z]+)"', page.text))


class TestFilters:
    def test_by_key_project_model_route_and_status(self, world: World) -> None:
        alpha_id, alpha = world.new_key(label="alpha-key", project="alpha")
        beta_id, beta = world.new_key(label="beta-key", project="beta")
        a_routed = call(world, ROUTED_CHAT, alpha)
        a_official = call(world, OFFICIAL_CHAT, alpha)
        b_routed = call(world, ROUTED_CHAT, beta)
        failed = failed_call(world, ROUTED_CHAT)
        mine = {a_routed, a_official, b_routed, failed}
        with as_user(world) as client:
            everything = listed(client.get("/receipts"))
            by_key = listed(client.get("/receipts", params={"key": str(alpha_id)}))
            by_project = listed(client.get("/receipts", params={"project": "beta"}))
            by_route = listed(client.get("/receipts", params={"route_type": "official"}))
            by_model = listed(client.get("/receipts", params={"model": "tg-chat"}))
            ok_routed_alpha = listed(
                client.get(
                    "/receipts",
                    params={"key": str(alpha_id), "route_type": "routed", "status": "ok"},
                )
            )
            by_status = listed(client.get("/receipts", params={"status": "failed"}))
            form = client.get("/receipts").text
        assert mine <= everything
        assert by_key == {a_routed, a_official}
        assert by_project == {b_routed}
        assert by_route == {a_official}
        assert by_model == mine
        assert ok_routed_alpha == {a_routed}
        assert by_status == {failed}
        assert f'<option value="{alpha_id}"' in form and "alpha-key" in form
        assert f'<option value="{beta_id}"' in form
        assert '<option value="alpha">' in form  # projects offered

    def test_days_are_a_half_open_utc_range(self, world: World) -> None:
        first = call(world, ROUTED_CHAT)  # 2026-01-01
        world.clock.advance(2 * 86_400)
        third = call(world, ROUTED_CHAT)  # 2026-01-03
        with as_user(world) as client:
            only_first = listed(
                client.get("/receipts", params={"since": "2026-01-01", "until": "2026-01-02"})
            )
            before_third = listed(client.get("/receipts", params={"until": "2026-01-03"}))
            from_third = listed(client.get("/receipts", params={"since": "2026-01-03"}))
            empty = client.get("/receipts", params={"since": "2026-01-03", "until": "2026-01-03"})
            bad = client.get("/receipts", params={"since": "yesterday"})
        assert only_first == {first}
        assert before_third == {first}  # "to" is excluded
        assert from_third == {third}
        for refused in (empty, bad):
            assert refused.status_code == 400
            assert "text/html" in refused.headers["content-type"]
            assert "Traceback" not in refused.text
        assert "“to” must be after “from”" in empty.text
        assert "from must be a date" in bad.text

    def test_bad_filter_values_are_refused_readably(self, world: World) -> None:
        with as_user(world) as client:
            for params in ({"status": "gone"}, {"route_type": "cheap"}, {"key": "abc"}):
                refused = client.get("/receipts", params=params)
                assert refused.status_code == 400, params
                assert "Traceback" not in refused.text and 'File "' not in refused.text

    def test_the_csv_link_downloads_exactly_the_filtered_requests(self, world: World) -> None:
        _, alpha = world.new_key(label="alpha-key", project="alpha")
        wanted = call(world, ROUTED_CHAT, alpha)
        other = call(world, OFFICIAL_CHAT, alpha)
        call(world, ROUTED_CHAT)
        with as_user(world) as client:
            page = client.get(
                "/receipts",
                params={"project": "alpha", "route_type": "routed", "since": "2026-01-01"},
            ).text
            href = re.search(r'href="(/api/exports/requests[^"]+)"', page)
            assert href is not None
            download = client.get(href.group(1).replace("&amp;", "&"))
        assert download.status_code == 200, download.text
        rows = list(csv.DictReader(io.StringIO(download.text)))
        ids = {r["request_id"] for r in rows}
        assert ids == {wanted} and other not in ids


class TestChart:
    def test_spend_per_day_bucket_and_model_with_exact_figures(self, world: World) -> None:
        day1 = [call(world, ROUTED_CHAT), call(world, ROUTED_CHAT), call(world, OFFICIAL_CHAT)]
        world.clock.advance(86_400)
        day2 = [call(world, ROUTED_CHAT)]
        charge = {r: int(world.receipt(r)["charge_nanos"]) for r in day1 + day2}
        with as_user(world) as client:
            page = client.get("/receipts")
            ranged = client.get("/receipts", params={"since": "2026-01-02", "until": "2026-01-03"})
        text = page.text
        assert page.status_code == 200
        assert "Spend per day, 2025-12-04 to 2026-01-02 (UTC)" in text  # the last 30 days
        routed = re.search(r'<table data-testid="spend-routed">(.*?)</table>', text, re.S)
        official = re.search(r'<table data-testid="spend-credit">(.*?)</table>', text, re.S)
        assert routed is not None and official is not None
        routed_day1 = charge[day1[0]] + charge[day1[1]]
        rows = re.findall(r'<tr><th scope="row">(\S+)</th>(.*?)</tr>', routed.group(1), re.S)
        cells = {d: re.findall(r'<td class="num">([^<]+)</td>', c) for d, c in rows}
        assert cells["2026-01-01"] == [money(routed_day1, "CNY"), "2", money(routed_day1, "CNY")]
        day2_charge = money(charge[day2[0]], "CNY")
        assert cells["2026-01-02"] == [day2_charge, "1", day2_charge]
        total = routed_day1 + charge[day2[0]]
        assert cells["Total"] == [money(total, "CNY"), "3", money(total, "CNY")]
        assert money(charge[day1[2]], "USD") in official.group(1)
        # the SVG: inline, one chart per bucket, a bar per day and model titled with the amount
        svg = re.search(r'data-testid="chart-routed">(.*?)</figure>', text, re.S)
        assert svg is not None and '<svg viewBox="0 0 720 220" role="img"' in svg.group(1)
        titles = re.findall(r"<rect [^>]+><title>([^<]+)</title>", svg.group(1))
        assert titles == [
            f"2026-01-01 · {CHAT}: {money(routed_day1, 'CNY')}",  # the public model's name
            f"2026-01-02 · {CHAT}: {money(charge[day2[0]], 'CNY')}",
        ]
        assert money(total, "CNY") + " in total" in svg.group(1)
        # the axis labels are exact amounts (the top day and half of it), never a float
        labels = re.findall(r"<text [^>]+>([^<]+)</text>", svg.group(1))
        top = max(routed_day1, charge[day2[0]])
        assert [t for t in labels if t.startswith("¥")] == [
            money(top, "CNY"),
            money(top // 2, "CNY"),
        ]
        # a range: only its days, in the chart and in the table
        assert "Spend per day, 2026-01-02 to 2026-01-02 (UTC)" in ranged.text
        assert "2026-01-01" not in re.sub(r"<option.*?</option>", "", ranged.text)
        assert 'data-testid="spend-credit"' not in ranged.text  # nothing official that day

    def test_nothing_charged_says_so(self, world: World) -> None:
        with as_user(world) as client:
            text = client.get("/receipts").text
        assert "Nothing was charged in these days." in text
        assert "<svg viewBox" not in text
