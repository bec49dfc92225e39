"""Routing through a real gateway (the openai SDK against a live server in front of two test
upstreams, tests/fixtures/gateway.py), on SQLite and PostgreSQL: the configured number of
attempts, every circuit open, and which upstream errors count against a channel
(docs/decisions/0019). Every refused or failed request leaves a receipt charging nothing, and
the ledger reconciles after each test."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.fixtures.gateway import (
    CHAT,
    OFFICIAL,
    OFFICIAL_CHAT,
    ROUTED_CHAT,
    START_BALANCE,
    World,
    WorldFactory,
    expected_charge,
    gateway_upstreams,
    make_world,
    reconciled,
    world,
)

__all__ = ["gateway_upstreams", "make_world", "reconciled", "world"]

MESSAGES: list[Any] = [{"role": "user", "content": "Which way?"}]


def chat(world: World, model: str = OFFICIAL_CHAT) -> Any:
    with world.openai(max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, max_tokens=8
        )


def attempts(receipt: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(a["channel"], a["status"]) for a in json.loads(receipt["attempts_json"])]


def assert_nothing_charged(world: World, request_id: str) -> dict[str, Any]:
    receipt = world.receipt(request_id)
    assert receipt["charge_nanos"] == 0 and receipt["entry_id"] is None
    assert world.balance() == START_BALANCE and world.held() == 0
    return receipt


def test_the_number_of_attempts_is_the_operators_setting(make_world: WorldFactory) -> None:
    world = make_world(gateway_max_attempts=1)
    world.primary.fault("http_500", times=1)
    with pytest.raises(openai.APIStatusError) as failed:
        chat(world)
    assert failed.value.status_code == 502 and failed.value.code == "upstream_failed"
    receipt = assert_nothing_charged(world, failed.value.response.headers["x-request-id"])
    assert attempts(receipt) == [("Official A", 500)]
    assert world.backup.requests == []  # the backup was not tried: one attempt allowed


def test_when_every_circuit_is_open_it_is_a_503_without_calling_anyone(world: World) -> None:
    for upstream in (world.primary, world.backup):
        upstream.fault("http_500", model=f"{CHAT}-official")
    for _ in range(3):  # the world opens a circuit after 3 failures in its window
        with pytest.raises(openai.APIStatusError):
            chat(world)
    assert world.circuit("official-a") == world.circuit("official-b") == "open"
    seen = len(world.primary.requests) + len(world.backup.requests)

    with pytest.raises(openai.APIStatusError) as unavailable:
        chat(world)

    assert unavailable.value.status_code == 503
    assert unavailable.value.code == "model_unavailable"
    assert "127.0.0.1" not in unavailable.value.response.text
    assert len(world.primary.requests) + len(world.backup.requests) == seen
    receipt = assert_nothing_charged(world, unavailable.value.response.headers["x-request-id"])
    assert attempts(receipt) == []
    assert attempts(world.receipt(chat(world, ROUTED_CHAT).headers["x-request-id"])) == [
        ("Routed A", 200)  # the routed channels on the same upstreams are unaffected
    ]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b'{"model": "tg-chat:official"}', "invalid_request", "messages"),
        (b'{"model": "tg-chat:official", "messages": []}', "invalid_request", "messages"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "invalid_request", "model"),
    ],
)
def test_a_malformed_body_is_a_400_before_any_channel_is_tried(
    world: World, body: bytes, code: str, param: str | None
) -> None:
    with world.http() as http:
        refused = http.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert "Traceback" not in refused.text
    assert world.primary.requests == [] and world.backup.requests == []
    receipt = assert_nothing_charged(world, refused.headers["x-request-id"])
    assert receipt["status"] == "rejected" and receipt["charge_policy"] == "rejected:no_charge"
    assert world.balance() == START_BALANCE and world.held() == 0


def test_an_upstream_400_is_the_requests_fault_not_the_channels(world: World) -> None:
    """A body the gateway accepts but the upstream refuses: the client gets the upstream's 400,
    no other channel is tried (it would refuse it too), and no number of them opens a circuit."""
    for _ in range(4):
        with world.http() as http:
            refused = http.post(
                "/v1/chat/completions",
                json={"model": OFFICIAL_CHAT, "messages": ["not an object"], "max_tokens": 8},
            )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "upstream_rejected" and "messages" in error["message"]
        receipt = assert_nothing_charged(world, refused.headers["x-request-id"])
        assert attempts(receipt) == [("Official A", 400)]
    assert world.backup.requests == []
    assert world.circuit("official-a") == "closed"
    healthy = world.receipt(chat(world).headers["x-request-id"])
    assert attempts(healthy) == [("Official A", 200)]


def test_an_upstream_401_blames_the_channel_falls_back_and_opens_its_circuit(
    world: World,
) -> None:
    """Channel A's secret is no longer accepted by its upstream: each request falls back to B
    (same route type) and is charged there; A's circuit opens after the usual number of
    failures, never on the first; the client never sees the upstream's 401."""
    world.primary.configure(api_key="sk-rotated-by-the-provider")
    raw = chat(world)
    receipt = world.receipt(raw.headers["x-request-id"])
    assert attempts(receipt) == [("Official A", 401), ("Official B", 200)]
    truth = world.backup.last.usage
    assert truth is not None
    assert receipt["charge_nanos"] == expected_charge(
        OFFICIAL, truth.prompt_tokens, truth.completion_tokens
    )
    assert world.circuit("official-a") == "closed"  # one error never opens it
    for _ in range(2):
        chat(world)
    assert world.circuit("official-a") == "open"
    after = world.receipt(chat(world).headers["x-request-id"])
    assert attempts(after) == [("Official B", 200)]
