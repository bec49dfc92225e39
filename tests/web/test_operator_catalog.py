"""Operator console: models and prices — the list with offers per route type and current price
version, a model's price history, creating a model, setting a price (a new version that bills
the next request), catalog sync from pasted text or an uploaded file through a diff to confirm
— and refusals that write nothing."""

from __future__ import annotations

import re

import httpx
import openai
from sqlalchemy import func, select

from tallygate.models.audit import audit_events
from tallygate.models.catalog import models as models_table
from tallygate.models.catalog import price_versions
from tests.fixtures.gateway import CHAT, EMBED, World, expected_charge
from tests.fixtures.gateway import Prices as WorldPrices
from tests.web.helpers import csrf_of, session_client, submit

PRICE_LIST = """
models:
  - name: tg-chat
    offers:
      official: {input: "3.000000001", output: "12", cached_input: "1.5"}
  - name: synced/new-model
    description: from the price list
    context_length: 32000
    output_cap: 2048
    offers:
      routed: {input: "0.7", output: "2.8"}
"""


def _ops(world: World) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(world.operator))


def _count(world: World, table: object) -> int:
    with world.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _audits(world: World) -> int:
    return _count(world, audit_events)


class TestModelPages:
    def test_list_shows_offers_prices_and_versions(self, world: World) -> None:
        with _ops(world) as ops:
            page = ops.get("/operator/models")
        assert page.status_code == 200
        row = page.text.split(f'data-model="{CHAT}"')[1].split(f'data-model="{EMBED}"')[0]
        assert "$2.500000003" in row and "$10.000000007" in row and "$1.250000001" in row
        assert "¥1.100000001" in row and "¥4.400000003" in row
        assert "Credit" in row and "Routed balance" in row
        assert re.search(r"<td>v\d+</td>", row)

    def test_create_model_then_refusals_write_nothing(self, world: World) -> None:
        with _ops(world) as ops:
            made = submit(
                ops,
                "/operator/models",
                "/operator/models",
                name="vendor/new-one",
                description="a test model",
                context_length="64000",
                output_cap="1024",
            )
            assert made.status_code == 303
            page = ops.get(made.headers["location"])
            assert page.status_code == 200 and "vendor/new-one" in page.text
            assert "Model created" in page.text and "Not offered on this route type" in page.text
            before = (_count(world, models_table), _audits(world))
            for fields, words in (
                ({"name": "bad:name"}, "model"),
                ({"name": "vendor/new-one"}, "already exists"),
                ({"name": "fine", "context_length": "lots"}, "whole number"),
            ):
                form = {"context_length": "1000", "output_cap": "100", **fields}
                refused = submit(ops, "/operator/models", "/operator/models", **form)
                assert refused.status_code in (400, 409), refused.text
                assert words in refused.text and "Traceback" not in refused.text
            assert (_count(world, models_table), _audits(world)) == before

    def test_a_new_price_is_a_new_version_and_bills_the_next_request(self, world: World) -> None:
        with _ops(world) as ops:
            saved = submit(
                ops,
                f"/operator/models/{CHAT}",
                f"/operator/models/{CHAT}/offers/official",
                input="5.000000001",
                output="20",
                cached_input="",
                enabled="on",
            )
            assert saved.status_code == 303
            page = ops.get(saved.headers["location"]).text
        assert "New official price saved" in page
        current = page.split('data-testid="current-official"')[1].split("</p>")[0]
        assert "$5.000000001" in current and "$20.00" in current
        history = page.split('id="history"')[1]
        assert history.count("<strong>current</strong>") == 2  # official and routed
        assert "$2.500000003" in history  # the old version is kept
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}]
            )
        receipt = world.receipt(raw.headers["x-request-id"])
        usage = world.primary.last.usage
        new = WorldPrices("official", "credit", "USD", 5_000_000_001, 20 * 10**9, 5_000_000_001)
        assert receipt["charge_nanos"] == expected_charge(
            new, usage.prompt_tokens, usage.completion_tokens
        )
        current_id = re.search(r"Price version v(\d+)", current)
        assert current_id
        assert receipt["price_version_id"] == int(current_id.group(1))

    def test_model_settings_and_taking_it_off_sale(self, world: World) -> None:
        fields = {"description": "chat", "context_length": "64000", "output_cap": "2048"}
        with _ops(world) as ops:
            off = submit(
                ops, f"/operator/models/{CHAT}", f"/operator/models/{CHAT}/settings", **fields
            )
            assert off.status_code == 303
            page = ops.get(off.headers["location"]).text
            assert "Model saved." in page and "disabled · context 64,000" in page
            with world.openai() as client:
                try:
                    client.chat.completions.create(
                        model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}]
                    )
                    refused = False
                except openai.APIStatusError as exc:
                    refused = exc.status_code in (400, 403, 404)
            assert refused
            before = _audits(world)
            bad = submit(
                ops,
                f"/operator/models/{CHAT}",
                f"/operator/models/{CHAT}/settings",
                **{**fields, "output_cap": "-5"},
                enabled="on",
            )
            assert bad.status_code == 400 and 'class="alert error"' in bad.text
            assert _audits(world) == before
            on = submit(
                ops,
                f"/operator/models/{CHAT}",
                f"/operator/models/{CHAT}/settings",
                **fields,
                enabled="on",
            )
            assert on.status_code == 303
        with world.openai() as client:
            client.chat.completions.create(
                model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}]
            )

    def test_a_bad_price_is_refused_and_writes_nothing(self, world: World) -> None:
        before = (_count(world, price_versions), _audits(world))
        with _ops(world) as ops:
            for fields in ({"input": "abc", "output": "1"}, {"input": "-1", "output": "1"}):
                refused = submit(
                    ops,
                    f"/operator/models/{CHAT}",
                    f"/operator/models/{CHAT}/offers/routed",
                    **fields,
                )
                assert refused.status_code == 400 and "Traceback" not in refused.text
                assert 'class="alert error"' in refused.text
            missing = submit(
                ops,
                f"/operator/models/{CHAT}",
                "/operator/models/no-such-model/offers/routed",
                input="1",
                output="1",
            )
            assert missing.status_code == 404
            assert ops.get("/operator/models/no-such-model").status_code == 404
        assert (_count(world, price_versions), _audits(world)) == before


class TestCatalogSync:
    def test_pasted_yaml_is_previewed_then_applied_on_confirmation(self, world: World) -> None:
        before = (_count(world, models_table), _count(world, price_versions), _audits(world))
        with _ops(world) as ops:
            preview = submit(
                ops, "/operator/catalog-sync", "/operator/catalog-sync/preview", text=PRICE_LIST
            )
            assert preview.status_code == 200, preview.text
            assert "synced/new-model" in preview.text and "¥0.70" in preview.text
            changed = preview.text.split('data-testid="changed"')[1]
            assert "$2.500000003" in changed and "$3.000000001" in changed
            assert EMBED in preview.text  # not in the list: kept
            # the preview wrote nothing
            assert (
                _count(world, models_table),
                _count(world, price_versions),
                _audits(world),
            ) == before
            diff_id = re.search(r'name="diff_id" value="([0-9a-f]+)"', preview.text)
            assert diff_id
            applied = ops.post(
                "/operator/catalog-sync/apply",
                data={
                    "csrf_token": csrf_of(preview),
                    "diff_id": diff_id.group(1),
                    "text": PRICE_LIST,
                },
            )
            assert applied.status_code == 200 and "Catalog sync applied" in applied.text
            model_page = ops.get("/operator/models/synced/new-model").text
        assert "from the price list" in model_page and "¥0.70" in model_page
        assert _count(world, models_table) == before[0] + 1
        assert _count(world, price_versions) == before[1] + 2
        with world.db.read() as conn:
            actions = [
                r.action
                for r in conn.execute(
                    select(audit_events.c.action).where(
                        audit_events.c.actor == world.operator.email
                    )
                )
            ]
        assert "model.create" in actions and actions.count("price.set") == 2

    def test_an_uploaded_file_works_and_a_stale_diff_is_refused(self, world: World) -> None:
        with _ops(world) as ops:
            token = csrf_of(ops.get("/operator/catalog-sync"))
            preview = ops.post(
                "/operator/catalog-sync/preview",
                data={"csrf_token": token, "text": ""},
                files={"file": ("prices.yaml", PRICE_LIST.encode(), "application/yaml")},
            )
            assert preview.status_code == 200 and "synced/new-model" in preview.text
            diff_id = re.search(r'name="diff_id" value="([0-9a-f]+)"', preview.text)
            assert diff_id
            # the catalog moves on before the confirmation
            submit(
                ops,
                f"/operator/models/{CHAT}",
                f"/operator/models/{CHAT}/offers/routed",
                input="9",
                output="9",
                enabled="on",
            )
            before = (_count(world, models_table), _count(world, price_versions))
            stale = ops.post(
                "/operator/catalog-sync/apply",
                data={"csrf_token": token, "diff_id": diff_id.group(1), "text": PRICE_LIST},
            )
            assert stale.status_code == 409 and "preview again" in stale.text
        assert (_count(world, models_table), _count(world, price_versions)) == before

    def test_bad_documents_are_readable_refusals(self, world: World) -> None:
        with _ops(world) as ops:
            for text, words in (
                ("", "paste a price list"),
                ("models: [unclosed", "neither valid JSON nor YAML"),
                (
                    '{"models": [{"name": "tg-chat", "offers": {"official": '
                    '{"input": "x", "output": "1"}}}]}',
                    "offers.official.input",
                ),
            ):
                refused = submit(
                    ops, "/operator/catalog-sync", "/operator/catalog-sync/preview", text=text
                )
                assert refused.status_code == 400, refused.text
                assert words in refused.text and "Traceback" not in refused.text

    def test_users_and_forged_forms_are_refused(self, world: World) -> None:
        before = (_count(world, models_table), _count(world, price_versions))
        with session_client(world.base_url, world.make.session_token(world.user)) as user:
            for path in ("/operator/models", f"/operator/models/{CHAT}", "/operator/catalog-sync"):
                assert user.get(path).status_code == 403
            token = csrf_of(user.get("/keys"))
            refused = user.post(
                f"/operator/models/{CHAT}/offers/official",
                data={"csrf_token": token, "input": "0", "output": "0"},
            )
            assert refused.status_code == 403
        with _ops(world) as ops:
            forged = ops.post(
                "/operator/models",
                data={"csrf_token": "nope", "name": "x", "context_length": "1", "output_cap": "1"},
            )
            assert forged.status_code == 403
        assert (_count(world, models_table), _count(world, price_versions)) == before
