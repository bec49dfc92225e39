"""The audit trail page: filters by actor, action, target and time, pages back, and verifies
the chain on demand (intact, then tampered with). Both databases, a real server."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from tallygate.audit import service as audit
from tests.fixtures.gateway import World
from tests.web.helpers import session_client, submit


def ops(world: World) -> httpx.Client:
    return session_client(world.base_url, world.make.session_token(world.operator))


def record(world: World, n: int, *, actor: str, action: str, target: str) -> None:
    with world.db.begin() as conn:
        tx = world.ledger.tx(conn)
        for i in range(n):
            audit.record(
                tx,
                now_us=world.now_us(),
                actor=actor,
                source="operator",
                action=action,
                target=f"{target}{i}",
                after={"i": i},
                reason=f"reason {i}",
            )


def rows(page: httpx.Response) -> list[str]:
    """The ``data-target`` of every listed event, newest first."""
    assert page.status_code == 200, page.text
    body = page.text.split('id="audit-events"')[1] if 'id="audit-events"' in page.text else ""
    return [chunk.split('"')[0] for chunk in body.split('data-target="')[1:]]


class TestAuditTrail:
    def test_filters_by_actor_action_target_and_time(self, world: World) -> None:
        record(world, 2, actor="ann@example.com", action="channel.create", target="channel:")
        world.clock.advance(86_400)  # the next day
        record(world, 3, actor="bob@example.com", action="price.set", target="model:")
        with ops(world) as client:
            assert rows(client.get("/operator/audit?actor=ANN")) == ["channel:1", "channel:0"]
            assert rows(client.get("/operator/audit?action=price.set&actor=bob")) == [
                "model:2",
                "model:1",
                "model:0",
            ]
            assert rows(client.get("/operator/audit?action=channel.&actor=ann")) == [
                "channel:1",
                "channel:0",
            ]
            assert rows(client.get("/operator/audit?target=model:1")) == ["model:1"]
            day = world.clock.now().date().isoformat()
            assert len(rows(client.get(f"/operator/audit?since={day}&actor=example.com"))) == 3
            assert rows(client.get(f"/operator/audit?until={day}T00:00&actor=example.com")) == [
                "channel:1",
                "channel:0",
            ]
            bad = client.get("/operator/audit?since=yesterday")
            assert bad.status_code == 400 and "must be a date like 2026-01-31" in bad.text
            assert "Traceback" not in bad.text

    def test_pages_back_fifty_at_a_time(self, world: World) -> None:
        record(world, 120, actor="bulk", action="code.generate", target="campaign:")
        with ops(world) as client:
            first = client.get("/operator/audit?actor=bulk")
            assert rows(first)[0] == "campaign:119" and len(rows(first)) == 50
            older = first.text.split('href="/operator/audit?')[-1].split('"')[0]
            second = client.get("/operator/audit?" + older.replace("&amp;", "&"))
            assert rows(second)[0] == "campaign:69" and len(rows(second)) == 50
            assert "Newest" in second.text

    def test_verify_the_chain_shows_it_intact_then_a_tampered_event(self, world: World) -> None:
        record(world, 3, actor="ann", action="channel.create", target="channel:")
        with ops(world) as client:
            ok = submit(client, "/operator/audit", "/operator/audit/verify")
            assert ok.status_code == 200
            assert "The audit chain verifies" in ok.text
            with world.db.begin() as conn:
                conn.execute(
                    text("UPDATE audit_events SET reason = 'edited' WHERE target = 'channel:1'")
                )
            broken = submit(client, "/operator/audit", "/operator/audit/verify")
            assert "The audit chain is broken" in broken.text
            assert "was altered: its hash does not match its content" in broken.text
            forged = client.post("/operator/audit/verify", data={"csrf_token": "nope"})
            assert forged.status_code == 403
