"""Fallback and the circuit breaker: a failure before the first byte moves to the backup channel
of the same route type (the receipt lists every attempt; only the answer is charged); when every
channel fails nothing is charged; a channel that keeps failing is taken out of rotation — out of
retries too — and comes back by itself once the test clock has moved past its cool-down."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.fixtures.gateway import (
    CHAT,
    OFFICIAL,
    OFFICIAL_CHAT,
    ROUTED,
    ROUTED_CHAT,
    START_BALANCE,
    World,
    expected_charge,
)

MESSAGES: list[Any] = [{"role": "user", "content": "Which channel answers this?"}]


def chat(world: World, model: str = OFFICIAL_CHAT, **kwargs: Any) -> Any:
    with world.openai() as client:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, max_tokens=8, **kwargs
        )


def attempts(receipt: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(a["channel"], a["status"]) for a in json.loads(receipt["attempts_json"])]


class TestFallback:
    @pytest.mark.parametrize(
        ("fault", "options", "status"),
        [
            ("http_500", {}, 500),
            ("http_429", {}, 429),
            ("timeout", {}, None),
            ("connection_reset", {}, None),
            ("slow_first_byte", {"delay": 1.5}, None),  # longer than the channel's timeout
        ],
    )
    def test_a_failure_before_the_first_byte_falls_back_to_the_backup(
        self, world: World, fault: str, options: dict[str, Any], status: int | None
    ) -> None:
        world.primary.fault(fault, times=1, **options)

        raw = chat(world)

        assert raw.parse().choices[0].message.content
        truth = world.backup.last.usage
        assert truth is not None
        assert world.backup.last.model == f"{CHAT}-official"  # same route type
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)
        receipt = world.receipt(raw.headers["x-request-id"])
        assert attempts(receipt) == [("Official A", status), ("Official B", 200)]
        assert receipt["primary_channel"] == "Official A"
        assert receipt["channel"] == "Official B" and receipt["backup_used"]
        assert receipt["charge_nanos"] == expected
        assert world.user_debit(receipt["entry_id"]) == expected
        assert world.balance() == START_BALANCE - expected

    def test_a_stream_falls_back_before_its_first_byte_too(self, world: World) -> None:
        world.primary.fault("http_500", times=1)
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=ROUTED_CHAT, messages=MESSAGES, stream=True
            )
            request_id = stream.response.headers["x-request-id"]
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        truth = world.backup.last.usage
        assert truth is not None and world.backup.last.model == f"{CHAT}-routed"
        receipt = world.receipt(request_id)
        assert attempts(receipt) == [("Routed A", 500), ("Routed B", 200)]
        expected = expected_charge(ROUTED, truth.prompt_tokens, truth.completion_tokens)
        assert receipt["charge_nanos"] == expected == world.user_debit(receipt["entry_id"])

    def test_when_every_channel_fails_it_is_a_502_and_nothing_is_charged(
        self, world: World
    ) -> None:
        world.primary.fault("http_500", times=1)
        world.backup.fault("connection_reset", times=1)

        with pytest.raises(openai.APIStatusError) as failed:
            chat(world)

        assert failed.value.status_code == 502
        assert failed.value.code == "upstream_failed"
        assert "nothing was charged" in failed.value.message
        assert "127.0.0.1" not in failed.value.response.text  # no upstream address leaks
        receipt = world.receipt(failed.value.response.headers["x-request-id"])
        assert receipt["status"] == "failed"
        assert receipt["charge_policy"] == "upstream_error:no_charge"
        assert attempts(receipt) == [("Official A", 500), ("Official B", None)]
        assert receipt["charge_nanos"] == 0 and receipt["entry_id"] is None
        assert world.balance() == START_BALANCE and world.held() == 0


class TestCircuitBreaker:
    """The world's circuit opens after 3 failures in a 60 s window and cools down for 30 s."""

    def test_a_failing_channel_is_skipped_then_probed_and_closed_after_the_cool_down(
        self, world: World
    ) -> None:
        world.primary.fault("http_500", model=f"{CHAT}-official")  # until cleared
        for _ in range(3):
            receipt = world.receipt(chat(world).headers["x-request-id"])
            assert attempts(receipt) == [("Official A", 500), ("Official B", 200)]
        assert world.circuit("official-a") == "open"
        assert world.circuit("official-b") == "closed"
        seen_by_a = len(world.primary.requests)

        # Open: not tried first...
        receipt = world.receipt(chat(world).headers["x-request-id"])
        assert attempts(receipt) == [("Official B", 200)]
        # ...and not tried as a retry either, when the backup fails.
        world.backup.fault("http_500", times=1)
        with pytest.raises(openai.APIStatusError) as failed:
            chat(world)
        assert failed.value.status_code == 502
        assert len(world.primary.requests) == seen_by_a
        # The other route type's channel on the same upstream is unaffected.
        routed = world.receipt(chat(world, ROUTED_CHAT).headers["x-request-id"])
        assert attempts(routed) == [("Routed A", 200)]

        # The upstream recovers; the circuit stays open until the cool-down has passed.
        world.primary.clear_faults()
        world.clock.advance(29)
        assert attempts(world.receipt(chat(world).headers["x-request-id"])) == [("Official B", 200)]
        world.clock.advance(2)
        probe = world.receipt(chat(world).headers["x-request-id"])
        assert attempts(probe) == [("Official A", 200)]
        assert world.circuit("official-a") == "closed"
        assert attempts(world.receipt(chat(world).headers["x-request-id"])) == [("Official A", 200)]

    def test_a_failed_probe_opens_the_circuit_for_another_cool_down(self, world: World) -> None:
        world.primary.fault("http_500", model=f"{CHAT}-official")
        for _ in range(3):
            chat(world)
        assert world.circuit("official-a") == "open"

        world.clock.advance(31)
        probe = world.receipt(chat(world).headers["x-request-id"])
        assert attempts(probe) == [("Official A", 500), ("Official B", 200)]
        assert world.circuit("official-a") == "open"
        after = world.receipt(chat(world).headers["x-request-id"])
        assert attempts(after) == [("Official B", 200)]

    def test_a_single_error_never_opens_the_circuit(self, world: World) -> None:
        world.primary.fault("http_500", times=1)
        chat(world)
        for _ in range(3):
            assert attempts(world.receipt(chat(world).headers["x-request-id"])) == [
                ("Official A", 200)
            ]
        assert world.circuit("official-a") == "closed"


def test_route_health_reports_each_channel_and_model(world: World) -> None:
    world.primary.fault("http_429", times=1)
    chat(world)
    chat(world, ROUTED_CHAT)
    health = {(h["channel"], h["model"]): h for h in world.route_health()}
    assert health[("Official A", CHAT)]["requests"] == 1
    assert health[("Official A", CHAT)]["success_rate"] == 0.0
    assert health[("Official B", CHAT)]["success_rate"] == 1.0
    assert health[("Routed A", CHAT)]["circuit"] == "closed"
    assert "127.0.0.1" not in json.dumps(list(health.values()))
