"""The receipt a key holder reads by request id carries every field DESIGN.md's **receipt**
names — the key's label and project among them — with values checked against what the test set
up and what the upstream truly did; nobody else can read it. On SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.fixtures.gateway import (
    CHAT,
    ROUTED,
    START_BALANCE,
    World,
    as_decimal,
    expected_charge,
    gateway_upstreams,
    make_world,
    reconciled,
    world,
)

__all__ = ["gateway_upstreams", "make_world", "reconciled", "world"]

MESSAGES: list[Any] = [{"role": "user", "content": "Itemise this, please."}]


def per_m(nanos: int) -> Decimal:
    return Decimal(nanos) / 1_000_000_000


def test_a_streamed_request_through_the_keys_default_route_is_itemised(world: World) -> None:
    _, key = world.new_key(label="nightly batch", project="search", allowed_route_types=["routed"])
    with world.openai(key, max_retries=0) as client:
        stream = client.chat.completions.create(
            model=CHAT, messages=MESSAGES, max_tokens=7, stream=True
        )
        request_id = stream.response.headers["x-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    truth = world.primary.last.usage
    assert text and truth is not None
    charge = expected_charge(ROUTED, truth.prompt_tokens, truth.completion_tokens)

    world.receipt(request_id)  # settled
    with world.as_user() as http:
        response = http.get(f"/api/receipts/{request_id}")
    assert response.status_code == 200, response.text
    receipt = response.json()

    assert receipt["request_id"] == request_id and receipt["created_at"]
    assert (receipt["endpoint"], receipt["status"], receipt["http_status"]) == ("chat", "ok", 200)
    assert (receipt["key_label"], receipt["project"]) == ("nightly batch", "search")
    assert (receipt["model"], receipt["api_model_id"]) == (CHAT, CHAT)
    assert receipt["upstream_model"] == f"{CHAT}-routed"
    assert (receipt["route_type"], receipt["bucket"], receipt["currency"]) == (
        "routed",
        "routed",
        "CNY",
    )
    assert (receipt["primary_channel"], receipt["channel"]) == ("Routed A", "Routed A")
    assert receipt["backup_used"] is False
    (attempt,) = receipt["attempts"]
    assert (attempt["channel"], attempt["status"]) == ("Routed A", 200)
    assert attempt["latency_ms"] >= 0
    assert (receipt["input_tokens"], receipt["output_tokens"], receipt["cached_tokens"]) == (
        truth.prompt_tokens,
        truth.completion_tokens,
        0,
    )
    assert receipt["usage_basis"] == "upstream"
    assert receipt["price_version_id"] is not None
    assert (
        Decimal(receipt["input_price_per_m"]),
        Decimal(receipt["output_price_per_m"]),
        Decimal(receipt["cached_input_price_per_m"]),
    ) == (per_m(ROUTED.input), per_m(ROUTED.output), per_m(ROUTED.cached_input))
    assert receipt["hold_nanos"] >= charge
    assert receipt["charge_nanos"] == charge
    assert Decimal(receipt["charge"]) == as_decimal(charge)
    assert (
        receipt["balance_after_nanos"] == START_BALANCE - charge == world.balance(bucket="routed")
    )
    assert (receipt["failure_class"], receipt["charge_policy"]) == ("", "completed:charge_usage")
    assert world.user_debit(receipt["entry_id"]) == charge
    assert (receipt["error_code"], receipt["error_message"]) == ("", "")
    assert receipt["streamed"] is True and receipt["client_disconnected"] is False
    assert receipt["ttft_ms"] is not None and 0 <= receipt["ttft_ms"] <= receipt["latency_ms"]


def test_another_user_cannot_read_it(world: World) -> None:
    with world.openai(max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=f"{CHAT}:official", messages=MESSAGES, max_tokens=3
        )
    request_id = raw.headers["x-request-id"]
    world.receipt(request_id)
    with world.as_user(world.new_user()) as http:
        assert http.get(f"/api/receipts/{request_id}").status_code == 404
