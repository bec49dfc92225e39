"""Redeeming a code from the console: what arrived, where, until when — or exactly why not."""

from __future__ import annotations

import httpx

from tests.fixtures.gateway import World
from tests.web.helpers import csrf_of, session_client


def make_code(world: World, **campaign: object) -> str:
    token = world.make.session_token(world.operator)
    with httpx.Client(
        base_url=world.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as ops:
        body = {"name": "Launch", "bucket": "routed", "amount": "3.5", **campaign}
        made = ops.post("/admin/api/credits/campaigns", json=body)
        assert made.status_code == 201, made.text
        codes = ops.post(f"/admin/api/credits/campaigns/{made.json()['id']}/codes", json={})
        assert codes.status_code == 201, codes.text
        return str(codes.json()["codes"][0]["code"])


def redeem(client: httpx.Client, code: str) -> httpx.Response:
    token = csrf_of(client.get("/redeem"))
    return client.post("/redeem", data={"csrf_token": token, "code": code})


class TestRedeem:
    def test_a_code_credits_its_bucket_and_shows_where_and_until_when(self, world: World) -> None:
        code = make_code(world, credit_ttl_seconds=86400)
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            done = redeem(client, code)
            again = redeem(client, code)
            history = client.get("/redeem").text
        assert done.status_code == 201
        assert (
            "<strong>¥3.50</strong> was added to your <strong>Routed balance</strong>" in done.text
        )
        assert "Balance now ¥8.50" in done.text
        assert "expires on <strong>2026-01-02 00:00:00 UTC</strong>" in done.text
        assert "Ledger entry #" in done.text
        assert again.status_code == 409 and 'role="alert"' in again.text
        assert "Launch" in history and "¥3.50" in history

    def test_an_unknown_code_is_refused_precisely(self, world: World) -> None:
        with session_client(world.base_url, world.make.session_token(world.user)) as client:
            refused = redeem(client, "NOPE-NOPE-NOPE")
            forged = client.post("/redeem", data={"code": "NOPE"})
        assert refused.status_code == 404
        assert 'role="alert"' in refused.text and "Traceback" not in refused.text
        assert forged.status_code == 403
