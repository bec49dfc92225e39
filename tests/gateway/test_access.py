"""Who may call what: a key's route types and model globs (and what ``/v1/models`` shows it),
unknown models, revocation that bites at once, spend limits, rate limits — each refusal in
OpenAI's shape, with a rejected receipt and nothing charged."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.fixtures.gateway import (
    CHAT,
    EMBED,
    OFFICIAL,
    OFFICIAL_CHAT,
    OFFICIAL_EMBED,
    ROUTED_CHAT,
    START_BALANCE,
    World,
    expected_charge,
)

MESSAGES: list[Any] = [{"role": "user", "content": "May I?"}]


def chat(client: openai.OpenAI, model: str = OFFICIAL_CHAT, **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", 5)
    return client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, **kwargs
    )


def hold_for(prompt: int, max_tokens: int) -> int:
    """docs/billing.md: the prompt estimate padded by 12.5% + 16 tokens, plus max_tokens."""
    padded = prompt + prompt // 8 + 16
    return -(-(padded * OFFICIAL.input + max_tokens * OFFICIAL.output) // 1_000_000)


def assert_rejected(world: World, request_id: str, code: str) -> None:
    receipt = world.receipt(request_id)
    assert receipt["status"] == "rejected" and receipt["error_code"] == code
    assert receipt["charge_policy"] == "rejected:no_charge"
    assert receipt["charge_nanos"] == 0 and receipt["entry_id"] is None


class TestScope:
    def test_a_routed_only_key_cannot_call_an_official_model(self, world: World) -> None:
        _, key = world.new_key(allowed_route_types=["routed"])
        with world.openai(key) as client:
            with pytest.raises(openai.PermissionDeniedError) as refused:
                chat(client, OFFICIAL_CHAT)
            assert chat(client, ROUTED_CHAT).parse().choices
            assert chat(client, CHAT).parse().choices  # the bare name: its default, routed
        assert refused.value.status_code == 403
        assert refused.value.code == "route_type_not_allowed"
        assert_rejected(
            world, refused.value.response.headers["x-request-id"], "route_type_not_allowed"
        )
        assert world.balance(bucket="credit") == START_BALANCE
        assert all(r.model == f"{CHAT}-routed" for r in world.primary.requests)

    def test_models_lists_only_what_the_key_may_use(self, world: World) -> None:
        _, routed_only = world.new_key(allowed_route_types=["routed"])
        with world.openai(routed_only) as client:
            assert sorted(m.id for m in client.models.list()) == [CHAT, ROUTED_CHAT]
            with pytest.raises(openai.NotFoundError):
                client.models.retrieve(OFFICIAL_CHAT)
            assert client.models.retrieve(ROUTED_CHAT).id == ROUTED_CHAT
        with world.openai() as client:
            assert sorted(m.id for m in client.models.list()) == sorted(
                [CHAT, OFFICIAL_CHAT, ROUTED_CHAT, OFFICIAL_EMBED]
            )

    def test_model_globs_limit_the_models_a_key_may_call(self, world: World) -> None:
        _, key = world.new_key(allowed_models=["tg-c*"])
        with world.openai(key) as client:
            assert chat(client).parse().choices
            with pytest.raises(openai.PermissionDeniedError) as refused:
                client.embeddings.create(model=OFFICIAL_EMBED, input="no")
            assert [m.id for m in client.models.list() if m.id.startswith(EMBED)] == []
        assert refused.value.code == "model_not_allowed"

    def test_an_unknown_model_is_a_404(self, world: World) -> None:
        with world.openai() as client, pytest.raises(openai.NotFoundError) as missing:
            chat(client, "no-such-model")
        assert missing.value.code == "model_not_found"
        assert missing.value.body == {  # OpenAI's error shape
            "message": "the model 'no-such-model' does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
        assert len(world.primary.requests) == 0

    def test_a_model_not_offered_on_the_route_is_a_404_naming_the_offers(
        self, world: World
    ) -> None:
        with world.openai() as client, pytest.raises(openai.NotFoundError) as missing:
            client.embeddings.create(model=f"{EMBED}:routed", input="x")
        assert f"'{EMBED}:official'" in missing.value.message


class TestRevocation:
    @pytest.mark.parametrize("refresh_seconds", [0.05, 600.0], ids=["fast-refresh", "no-refresh"])
    def test_a_revoked_key_is_refused_at_once(
        self, make_world: Any, refresh_seconds: float
    ) -> None:
        world: World = make_world(config_refresh_seconds=refresh_seconds)
        key_id, key = world.new_key()
        with world.openai(key) as client:
            assert chat(client).parse().choices  # the gateway knows the key now
            with world.as_user() as http:
                assert http.post(f"/api/keys/{key_id}/revoke").status_code == 200
            with pytest.raises(openai.AuthenticationError) as refused:
                chat(client)
        assert refused.value.status_code == 401
        assert refused.value.code == "invalid_api_key"
        assert len(world.primary.requests) == 1

    def test_a_key_that_does_not_exist_is_a_401_without_a_receipt(self, world: World) -> None:
        with world.openai("tg-not-a-real-key") as client:
            with pytest.raises(openai.AuthenticationError) as refused:
                chat(client)
        assert refused.value.code == "invalid_api_key"
        assert world.receipts() == []


class TestSpendLimits:
    def test_a_spent_key_limit_is_a_402_key_spend_limit(self, world: World) -> None:
        prompt = world_prompt_tokens(world)
        limit = hold_for(prompt, 5)  # room for exactly one such hold
        key_id, key = world.new_key(spend_limits={"credit": {"total": limit}})
        with world.openai(key) as client:
            first = chat(client)
            with pytest.raises(openai.APIStatusError) as refused:
                chat(client)
        assert refused.value.status_code == 402
        assert refused.value.code == "key_spend_limit"
        assert "spend limit for bucket credit" in refused.value.message
        charged = world.receipt(first.headers["x-request-id"])["charge_nanos"]
        assert 0 < charged < limit
        assert world.balance() == START_BALANCE - charged
        assert_rejected(world, refused.value.response.headers["x-request-id"], "key_spend_limit")
        assert len(world.primary.requests) == 1


class TestRateLimits:
    def test_past_the_requests_per_minute_it_is_a_429_with_retry_after(self, world: World) -> None:
        _, key = world.new_key(rpm_limit=2)
        with world.openai(key) as client:
            first = chat(client)
            second = chat(client)
            with pytest.raises(openai.RateLimitError) as limited:
                chat(client)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        headers = limited.value.response.headers
        assert limited.value.code == "rate_limit_exceeded"
        assert 1 <= int(headers["retry-after"]) <= 60
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert_rejected(world, headers["x-request-id"], "rate_limit_exceeded")
        assert len(world.primary.requests) == 2

        world.clock.advance(61)  # the window slides with the server's clock
        with world.openai(key) as client:
            assert chat(client).parse().choices


def world_prompt_tokens(world: World) -> int:
    """The true prompt size of :data:`MESSAGES`, asked of the upstream directly."""
    with world.primary.client() as upstream:
        usage = upstream.chat.completions.create(
            model="count", messages=MESSAGES, max_tokens=1
        ).usage
    world.primary.reset()
    assert usage is not None
    return usage.prompt_tokens


class TestInsufficientBalance:
    def test_a_short_balance_is_a_402_naming_bucket_shortfall_and_affordable_tokens(
        self, world: World
    ) -> None:
        prompt = world_prompt_tokens(world)
        padded = prompt + prompt // 8 + 16
        balance = -(-(padded * OFFICIAL.input + 10 * OFFICIAL.output) // 1_000_000)
        poor = world.new_user(credit=balance)
        _, key = world.new_key(poor)
        with world.openai(key) as client, pytest.raises(openai.APIStatusError) as refused:
            chat(client, max_tokens=50)

        assert refused.value.status_code == 402
        assert refused.value.code == "insufficient_balance"
        shortfall = hold_for(prompt, 50) - balance
        message = refused.value.message
        assert "bucket credit" in message
        assert f"short by {money(shortfall)} USD" in message
        assert "affords 10 output tokens" in message
        assert world.balance(poor, "credit") == balance
        assert len(world.primary.requests) == 0

    def test_without_max_tokens_a_smaller_affordable_answer_is_sent_and_held(
        self, world: World
    ) -> None:
        prompt = world_prompt_tokens(world)
        padded = prompt + prompt // 8 + 16
        balance = -(-(padded * OFFICIAL.input + 25 * OFFICIAL.output) // 1_000_000)
        poor = world.new_user(credit=balance)
        _, key = world.new_key(poor)
        with world.openai(key) as client:
            raw = client.chat.completions.with_raw_response.create(
                model=OFFICIAL_CHAT, messages=MESSAGES
            )
        sent = world.primary.last.body["max_tokens"]
        assert sent == 25  # the most the balance affords for this prompt
        assert hold_for(prompt, sent) <= balance < hold_for(prompt, sent + 1)
        truth = world.primary.last.usage
        assert truth is not None and truth.completion_tokens <= sent
        receipt = world.receipt(raw.headers["x-request-id"])
        expected = expected_charge(OFFICIAL, truth.prompt_tokens, truth.completion_tokens)
        assert receipt["hold_nanos"] <= balance
        assert receipt["charge_nanos"] == expected == world.user_debit(receipt["entry_id"], poor)
        assert world.balance(poor, "credit") == balance - expected

    def test_a_bucket_with_debt_is_a_402_account_owes(self, world: World) -> None:
        poor = world.new_user(credit=1_000_000)
        world.make.spend(poor.id, 1_000_000)
        world.make.refund(poor.id, 1_000_000)  # money already spent: debt
        _, key = world.new_key(poor)
        with world.openai(key) as client, pytest.raises(openai.APIStatusError) as refused:
            chat(client)
        assert refused.value.status_code == 402
        assert refused.value.code == "account_owes"


def money(nanos: int) -> str:
    whole, frac = divmod(nanos, 1_000_000_000)
    return f"{whole}.{f'{frac:09d}'.rstrip('0').ljust(2, '0')}"


def test_errors_never_leak_upstream_addresses_or_secrets(world: World) -> None:
    world.primary.fault("http_500")
    world.backup.fault("http_500")
    with httpx.Client(base_url=world.base_url) as http:
        response = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {world.key}"},
            json={"model": OFFICIAL_CHAT, "messages": MESSAGES},
        )
    assert response.status_code == 502
    assert "127.0.0.1" not in response.text and "sk-upstream" not in response.text
    assert "Traceback" not in response.text
