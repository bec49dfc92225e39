"""Operator console: channels — list with health and circuits, create with a model mapping,
edit (secret write-only), disable/enable, test now — and refusals: bad input writes nothing,
users get 403, forms need their CSRF token."""

from __future__ import annotations

import httpx
import openai
from sqlalchemy import func, select

from tallygate.models.audit import audit_events
from tallygate.models.catalog import channels as channels_table
from tests.fixtures.gateway import CHAT, World
from tests.web.helpers import csrf_of, session_client, submit


def _ops(world: World) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(world.operator))


def _count(world: World) -> int:
    with world.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(channels_table)).scalar_one())


def _audit(world: World, action: str) -> int:
    with world.db.read() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(audit_events)
                .where(audit_events.c.action == action)
            ).scalar_one()
        )


def _create(ops: httpx.Client, world: World, **fields: str) -> httpx.Response:
    form = {
        "name": "extra",
        "label": "Extra A",
        "base_url": world.primary.base_url,
        "secret": "sk-upstream-test",
        "route_type": "official",
        "priority": "50",
        "weight": "1",
        "timeout_seconds": "30",
        "models": f"{CHAT} = {CHAT}-official",
    }
    return submit(ops, "/operator/channels/new", "/operator/channels", **{**form, **fields})


class TestChannelPages:
    def test_list_shows_every_channel_with_health_and_circuit(self, world: World) -> None:
        with world.openai() as client:
            client.chat.completions.create(
                model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}]
            )
        with _ops(world) as ops:
            page = ops.get("/operator/channels")
        assert page.status_code == 200
        for label in ("Official A", "Official B", "Routed A", "Routed B"):
            assert label in page.text
        row = page.text.split(f'data-channel="{world.channel_ids["official-a"]}"')[1]
        row = row.split("</tr>")[0]
        assert "100.0%" in row and "circuit <strong>closed</strong>" in row
        assert f"{CHAT} → {CHAT}-official" in row

    def test_create_with_mapping_reaches_the_gateway_and_never_shows_the_secret(
        self, world: World
    ) -> None:
        with _ops(world) as ops:
            created = _create(ops, world)
            assert created.status_code == 303
            location = created.headers["location"]
            detail = ops.get(location)
        assert detail.status_code == 200 and "Channel created." in detail.text
        assert 'data-testid="secret-state">set<' in detail.text
        assert "sk-upstream-test" not in detail.text
        assert f"{CHAT} = {CHAT}-official" in detail.text
        # the snapshot already has it: priority 50 beats the world's primary (10)
        labels = {c.label for c in world.app.state.gateway.snapshot.channels}
        assert "Extra A" in labels
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}]
            )
        assert world.receipt(raw.headers["x-request-id"])["channel"] == "Extra A"
        assert _audit(world, "channel.create") >= 1

    def test_bad_input_is_refused_readably_and_writes_nothing(self, world: World) -> None:
        before = _count(world)
        with _ops(world) as ops:
            bad_url = _create(ops, world, base_url="ftp://nowhere")
            unknown_model = _create(ops, world, models="no-such-model = x")
            bad_number = _create(ops, world, priority="high")
            bad_line = _create(ops, world, models="= only-upstream")
        assert bad_url.status_code == 400 and "http:// or https://" in bad_url.text
        assert unknown_model.status_code == 400 and "no-such-model" in unknown_model.text
        assert bad_number.status_code == 400 and "whole number" in bad_number.text
        assert bad_line.status_code == 400 and "line 1" in bad_line.text
        for response in (bad_url, unknown_model, bad_number, bad_line):
            assert "Traceback" not in response.text
            assert 'value="Extra A"' in response.text  # the form keeps what was typed
            assert "sk-upstream-test" not in response.text
        assert _count(world) == before

    def test_edit_replaces_the_secret_only_when_asked(self, world: World) -> None:
        cid = world.channel_ids["routed-b"]
        with _ops(world) as ops:
            fields = {
                "label": "Routed Backup",
                "base_url": world.backup.base_url,
                "route_type": "routed",
                "priority": "3",
                "weight": "2",
                "timeout_seconds": "20",
            }
            kept = submit(ops, f"/operator/channels/{cid}", f"/operator/channels/{cid}", **fields)
            assert kept.status_code == 303
            page = ops.get(f"/operator/channels/{cid}").text
            assert "Routed Backup" in page and 'data-testid="secret-state">set<' in page
            empty_replace = submit(
                ops,
                f"/operator/channels/{cid}",
                f"/operator/channels/{cid}",
                **fields,
                secret_action="replace",
            )
            assert empty_replace.status_code == 400 and "new secret" in empty_replace.text
            removed = submit(
                ops,
                f"/operator/channels/{cid}",
                f"/operator/channels/{cid}",
                **fields,
                secret_action="remove",
            )
            assert removed.status_code == 303
            page = ops.get(f"/operator/channels/{cid}").text
            assert 'data-testid="secret-state">not set<' in page
        with world.db.read() as conn:
            row = conn.execute(
                select(channels_table.c.priority, channels_table.c.weight).where(
                    channels_table.c.id == cid
                )
            ).one()
        assert (row.priority, row.weight) == (3, 2)

    def test_disable_takes_the_channel_out_of_rotation_and_enable_brings_it_back(
        self, world: World
    ) -> None:
        cid = world.channel_ids["official-a"]
        with _ops(world) as ops:
            off = submit(ops, f"/operator/channels/{cid}", f"/operator/channels/{cid}/disable")
            assert off.status_code == 303
            assert "Channel disabled" in ops.get(off.headers["location"]).text
            with world.openai() as client:
                raw = client.chat.completions.with_raw_response.create(
                    model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}]
                )
            assert world.receipt(raw.headers["x-request-id"])["channel"] == "Official B"
            on = submit(ops, f"/operator/channels/{cid}", f"/operator/channels/{cid}/enable")
            assert on.status_code == 303
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}]
            )
        assert world.receipt(raw.headers["x-request-id"])["channel"] == "Official A"

    def test_mapping_edit_and_refusal(self, world: World) -> None:
        cid = world.channel_ids["routed-a"]
        with _ops(world) as ops:
            bad = submit(
                ops,
                f"/operator/channels/{cid}",
                f"/operator/channels/{cid}/models",
                models=f"{CHAT} = a\n{CHAT} = b",
            )
            assert bad.status_code == 400 and "mapped twice" in bad.text
            good = submit(
                ops,
                f"/operator/channels/{cid}",
                f"/operator/channels/{cid}/models",
                models=f"{CHAT} = renamed-upstream",
            )
            assert good.status_code == 303
            assert f"{CHAT} = renamed-upstream" in ops.get(f"/operator/channels/{cid}").text

    def test_test_now_shows_the_outcome(self, world: World) -> None:
        good, bad = world.channel_ids["official-a"], world.channel_ids["official-b"]
        with _ops(world) as ops:
            ok = submit(ops, f"/operator/channels/{good}", f"/operator/channels/{good}/test")
            # point B at a closed port: the test fails with a reason, not a stack trace
            submit(
                ops,
                f"/operator/channels/{bad}",
                f"/operator/channels/{bad}",
                label="Official B",
                base_url="http://127.0.0.1:9/v1",
                route_type="official",
                priority="0",
                weight="1",
                timeout_seconds="5",
            )
            failed = submit(ops, f"/operator/channels/{bad}", f"/operator/channels/{bad}/test")
        assert ok.status_code == 200 and "Test succeeded" in ok.text and "HTTP 200" in ok.text
        assert failed.status_code == 200 and "Test failed" in failed.text
        assert "could not connect" in failed.text and "sk-upstream-test" not in failed.text

    def test_failures_show_in_health_and_recent_failures(self, world: World) -> None:
        world.primary.fault("http_500")
        world.backup.fault("http_500")
        with world.openai() as client:
            raw = client.chat.completions.with_raw_response
            try:
                raw.create(model=f"{CHAT}:official", messages=[{"role": "user", "content": "hi"}])
            except openai.APIStatusError as exc:
                request_id = exc.response.headers["x-request-id"]
        receipt = world.receipt(request_id)
        assert receipt["status"] != "ok"
        primary, backup = world.channel_ids["official-a"], world.channel_ids["official-b"]
        with _ops(world) as ops:
            first = ops.get(f"/operator/channels/{primary}").text
            second = ops.get(f"/operator/channels/{backup}").text
            unrelated = ops.get(f"/operator/channels/{world.channel_ids['routed-a']}").text
        for page in (first, second):
            failures = page.split("Recent failures")[1].split("</table>")[0]
            assert request_id in failures and "HTTP 500" in failures
        assert request_id not in unrelated
        health = first.split('id="health-h"')[1].split("Recent failures")[0]
        row = health.split(f"<td>{CHAT}</td>")[1].split("</tr>")[0]
        assert '<td class="num">1</td>' in row  # one consecutive failure
        assert "0.0%" in row and "The server had an error" in row  # the last error, in words

    def test_refusals_users_csrf_and_unknown_ids(self, world: World) -> None:
        cid = world.channel_ids["official-a"]
        before = _count(world)
        with session_client(world.base_url, world.make.session_token(world.user)) as user:
            for path in (
                "/operator/channels",
                "/operator/channels/new",
                f"/operator/channels/{cid}",
            ):
                response = user.get(path)
                assert response.status_code == 403 and "operators only" in response.text
            token = csrf_of(user.get("/keys"))
            refused = user.post(f"/operator/channels/{cid}/disable", data={"csrf_token": token})
            assert refused.status_code == 403
        with _ops(world) as ops:
            forged = ops.post(
                "/operator/channels",
                data={"csrf_token": "forged", "name": "x", "label": "x", "base_url": "http://a"},
            )
            assert forged.status_code == 403
            missing = ops.get("/operator/channels/999999")
            assert missing.status_code == 404 and "Traceback" not in missing.text
        assert _count(world) == before
        with world.db.read() as conn:
            enabled = conn.execute(
                select(channels_table.c.enabled).where(channels_table.c.id == cid)
            ).scalar_one()
        assert enabled
