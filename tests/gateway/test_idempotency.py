"""``Idempotency-Key``: a retried request returns the original answer and is billed once; the
same key with another body is refused; a failed request forgets its key."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fixtures.gateway import OFFICIAL, OFFICIAL_CHAT, START_BALANCE, World, expected_charge

MESSAGES: list[Any] = [{"role": "user", "content": "Bill me once, please."}]


def chat(world: World, key: str, **kwargs: Any) -> Any:
    with world.openai() as client:
        return client.chat.completions.with_raw_response.create(
            model=OFFICIAL_CHAT,
            messages=kwargs.pop("messages", MESSAGES),
            max_tokens=10,
            extra_headers={"Idempotency-Key": key},
            **kwargs,
        )


class TestIdempotencyKey:
    def test_a_retried_request_returns_the_original_answer_and_is_billed_once(
        self, world: World
    ) -> None:
        first = chat(world, "retry-1")
        again = chat(world, "retry-1")

        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["x-request-id"] == first.headers["x-request-id"]
        assert again.http_response.text == first.http_response.text
        assert len(world.primary.requests) == 1
        truth = world.primary.last.usage
        assert truth is not None
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)
        [receipt] = world.receipts()
        assert receipt["charge_nanos"] == expected
        assert world.entries_for(receipt["request_id"]) == [receipt["entry_id"]]
        assert world.balance() == START_BALANCE - expected

    def test_the_sdk_retrying_after_a_lost_answer_pays_once(self, world: World) -> None:
        """The SDK's own retry (max_retries) reuses the key it was given."""
        with world.openai(max_retries=2) as client:
            first = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT,
                messages=MESSAGES,
                max_tokens=10,
                extra_headers={"Idempotency-Key": "sdk-1"},
            )
            second = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT,
                messages=MESSAGES,
                max_tokens=10,
                extra_headers={"Idempotency-Key": "sdk-1"},
            )
        assert first.parse().id == second.parse().id
        assert len(world.receipts()) == 1

    def test_the_same_key_with_another_body_is_a_409(self, world: World) -> None:
        chat(world, "retry-2")
        with pytest.raises(openai.ConflictError) as conflict:
            chat(world, "retry-2", messages=[{"role": "user", "content": "Something else"}])
        assert conflict.value.code == "idempotency_conflict"
        assert len(world.primary.requests) == 1
        assert len([r for r in world.receipts() if r["charge_nanos"] > 0]) == 1

    def test_a_failed_request_forgets_its_key_so_a_retry_is_served(self, world: World) -> None:
        world.primary.fault("http_500", times=1)
        world.backup.fault("http_500", times=1)
        with pytest.raises(openai.APIStatusError) as failed:
            chat(world, "retry-3")
        assert failed.value.status_code == 502

        served = chat(world, "retry-3")

        assert "idempotent-replayed" not in served.headers
        truth = world.primary.last.usage
        assert truth is not None
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)
        assert world.balance() == START_BALANCE - expected

    def test_a_completed_stream_is_not_replayed_nor_billed_twice(self, world: World) -> None:
        with world.openai() as client:
            stream = client.chat.completions.create(
                model=OFFICIAL_CHAT,
                messages=MESSAGES,
                stream=True,
                extra_headers={"Idempotency-Key": "stream-1"},
            )
            original = stream.response.headers["x-request-id"]
            list(stream)
            with pytest.raises(openai.ConflictError) as again:
                client.chat.completions.create(
                    model=OFFICIAL_CHAT,
                    messages=MESSAGES,
                    stream=True,
                    extra_headers={"Idempotency-Key": "stream-1"},
                )
        assert again.value.code == "idempotency_replay_unavailable"
        assert original in again.value.message
        assert len(world.primary.requests) == 1
        assert len([r for r in world.receipts() if r["charge_nanos"] > 0]) == 1
