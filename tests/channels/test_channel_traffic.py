"""What an operator's channel changes do to real traffic through the gateway: a disabled channel
takes no request (not even as a retry) until it is enabled again, and a replaced secret is what
the upstream receives from the next request on. On SQLite and PostgreSQL; the ledger reconciles
after each test."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from tallygate.kit.config_version import read as config_version
from tests.fixtures.gateway import (
    OFFICIAL_CHAT,
    START_BALANCE,
    World,
    gateway_upstreams,
    make_world,
    reconciled,
    world,
)

__all__ = ["gateway_upstreams", "make_world", "reconciled", "world"]

MESSAGES: list[Any] = [{"role": "user", "content": "Which channel answers?"}]


def chat(world: World) -> Any:
    with world.openai(max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model=OFFICIAL_CHAT, messages=MESSAGES, max_tokens=6
        )


def attempts(world: World, raw: Any) -> list[tuple[str, int | None]]:
    receipt = world.receipt(raw.headers["x-request-id"])
    return [(a["channel"], a["status"]) for a in json.loads(receipt["attempts_json"])]


def operate(world: World, method: str, path: str, **body: Any) -> dict[str, Any]:
    """An operator's channel change; returns once this gateway's snapshot has reloaded."""
    with world.as_operator() as http:
        response = http.request(method, f"/admin/api/channels{path}", json=body or None)
    assert response.status_code == 200, response.text
    with world.db.read() as conn:
        version = config_version(world.ledger.tx(conn))  # the change bumped it
    runtime = world.app.state.gateway
    deadline = time.monotonic() + 5
    while runtime.snapshot.version < version:
        assert time.monotonic() < deadline, "the gateway never picked up the change"
        time.sleep(0.01)
    return dict(response.json())


def test_a_disabled_channel_takes_no_traffic_until_enabled_again(world: World) -> None:
    channel_a = world.channel_ids["official-a"]
    assert attempts(world, chat(world)) == [("Official A", 200)]

    operate(world, "POST", f"/{channel_a}/disable")
    seen_by_a = len(world.primary.requests)
    assert attempts(world, chat(world)) == [("Official B", 200)]
    world.backup.fault("http_500", times=1)  # the backup fails: no retry on the disabled one
    with pytest.raises(openai.APIStatusError) as failed:
        chat(world)
    assert failed.value.status_code == 502
    assert len(world.primary.requests) == seen_by_a

    operate(world, "POST", f"/{channel_a}/enable")
    assert attempts(world, chat(world)) == [("Official A", 200)]
    assert world.held() == 0


def test_every_channel_of_the_route_disabled_is_a_503_charging_nothing(world: World) -> None:
    for name in ("official-a", "official-b"):
        operate(world, "POST", f"/{world.channel_ids[name]}/disable")
    with pytest.raises(openai.APIStatusError) as unavailable:
        chat(world)
    assert unavailable.value.status_code == 503
    assert unavailable.value.code == "model_unavailable"
    assert world.primary.requests == [] and world.backup.requests == []
    assert world.balance() == START_BALANCE and world.held() == 0


def test_a_replaced_secret_is_what_the_upstream_receives_from_the_next_request(
    world: World,
) -> None:
    channel_a = world.channel_ids["official-a"]
    chat(world)
    assert world.primary.last.headers["authorization"] == "Bearer sk-upstream-test"
    world.primary.configure(api_key="sk-rotated-0123")  # the provider rotated the key
    changed = operate(world, "PATCH", f"/{channel_a}", secret="sk-rotated-0123")
    assert "sk-rotated" not in json.dumps(changed)  # write-only: never shown back
    assert attempts(world, chat(world)) == [("Official A", 200)]
    assert world.primary.last.headers["authorization"] == "Bearer sk-rotated-0123"
