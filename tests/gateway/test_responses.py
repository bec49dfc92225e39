"""The Responses API: ``previous_response_id`` goes to the channel that created the response,
never to another one (only that upstream knows it)."""

from __future__ import annotations

import json

import openai
import pytest
from sqlalchemy import text

from tests.fixtures.gateway import (
    CHAT,
    OFFICIAL,
    OFFICIAL_CHAT,
    ROUTED_CHAT,
    START_BALANCE,
    World,
    expected_charge,
)


class TestPreviousResponseId:
    def test_a_follow_up_goes_to_the_backup_that_created_the_response(self, world: World) -> None:
        world.primary.fault("http_500", times=1)  # the first answer comes from the backup
        with world.openai() as client:
            first = client.responses.create(model=OFFICIAL_CHAT, input="Remember the number 7")
            assert world.backup.last.response_id == first.id

            raw = client.responses.with_raw_response.create(
                model=OFFICIAL_CHAT, input="What was the number?", previous_response_id=first.id
            )
        follow_up = raw.parse()
        assert follow_up.output_text
        assert world.backup.last.body["previous_response_id"] == first.id
        assert [r.body.get("previous_response_id") for r in world.primary.requests] == [None]
        truth = world.backup.last.usage
        assert truth is not None
        receipt = world.receipt(raw.headers["x-request-id"])
        attempts = [a["channel"] for a in json.loads(receipt["attempts_json"])]
        assert attempts == ["Official B"]
        assert receipt["charge_nanos"] == expected_charge(
            OFFICIAL, truth.prompt_tokens, truth.completion_tokens
        )

    def test_a_streamed_response_is_remembered_too(self, world: World) -> None:
        world.primary.fault("http_500", times=1)
        with world.openai() as client:
            events = list(client.responses.create(model=OFFICIAL_CHAT, input="Hi", stream=True))
            first_id = events[-1].response.id  # type: ignore[union-attr]
            client.responses.create(
                model=OFFICIAL_CHAT, input="Again", previous_response_id=first_id
            )
        assert world.backup.last.body["previous_response_id"] == first_id
        assert world.backup.last.model == f"{CHAT}-official"

    def test_when_its_channel_fails_there_is_no_fallback_elsewhere(self, world: World) -> None:
        with world.openai() as client:
            first = client.responses.create(model=OFFICIAL_CHAT, input="Remember 8")
            world.primary.fault("http_500", times=1)
            with pytest.raises(openai.APIStatusError) as failed:
                client.responses.create(
                    model=OFFICIAL_CHAT, input="Which?", previous_response_id=first.id
                )
        assert failed.value.status_code == 502
        assert len(world.backup.requests) == 0

    def test_an_unknown_previous_response_is_refused_before_any_hold(self, world: World) -> None:
        with world.openai() as client, pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(
                model=OFFICIAL_CHAT, input="?", previous_response_id="resp_unknown"
            )
        assert refused.value.status_code == 400
        assert refused.value.code == "previous_response_not_found"
        assert refused.value.param == "previous_response_id"  # type: ignore[attr-defined]
        assert "resp_unknown" in refused.value.message
        assert len(world.primary.requests) == len(world.backup.requests) == 0
        request_id = refused.value.response.headers["x-request-id"]
        receipt = world.receipt(request_id)
        assert receipt["status"] == "rejected" and receipt["http_status"] == 400
        assert receipt["failure_class"] == "rejected"
        assert receipt["charge_policy"] == "rejected:no_charge"
        assert receipt["error_code"] == "previous_response_not_found"
        assert receipt["hold_nanos"] == 0 and receipt["charge_nanos"] == 0
        assert receipt["entry_id"] is None and world.entries_for(request_id) == []
        with world.db.read() as conn:
            holds = conn.execute(
                text("SELECT COUNT(*) FROM holds WHERE hold_key = :k"), {"k": request_id}
            ).scalar_one()
        assert holds == 0  # refused before any hold
        assert world.balance() == START_BALANCE and world.held() == 0

    def test_a_response_from_another_route_type_is_unknown_on_this_one(self, world: World) -> None:
        with world.openai() as client:
            first = client.responses.create(model=OFFICIAL_CHAT, input="Remember 9")
            spent = START_BALANCE - world.balance()
            with pytest.raises(openai.BadRequestError) as refused:
                client.responses.create(
                    model=ROUTED_CHAT, input="Which?", previous_response_id=first.id
                )
        assert refused.value.code == "previous_response_not_found"
        assert len(world.primary.requests) + len(world.backup.requests) == 1
        receipt = world.receipt(refused.value.response.headers["x-request-id"])
        assert receipt["status"] == "rejected" and receipt["charge_nanos"] == 0
        assert world.balance() == START_BALANCE - spent
        assert world.balance(bucket="routed") == START_BALANCE
        assert world.held() == 0 and world.held(bucket="routed") == 0
