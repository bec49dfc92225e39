"""What a research run may cost: the estimate before it starts, and each step's output cap so
that the step's hold — and so the run's total — never passes the budget.

A step's hold is the gateway's own worst case (``pricing.worst_case`` of the padded prompt
estimate and ``max_tokens``), so ``max_tokens`` is chosen as the most output the budget left
affords for that prompt (``pricing.affordable_output``), capped by the step's own length."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tallygate.billing import pricing
from tallygate.billing.pricing import Price
from tallygate.gateway.endpoints import ENDPOINTS
from tallygate.research import prompts

CHAT = ENDPOINTS["/v1/chat/completions"]
STEP_OUTPUT = {"plan": 160, "analyse": 320, "compare": 320, "draft": 800}
"""The most output tokens a step asks for (its ``max_tokens`` when the budget allows)."""
LOW_OUTPUT = 24
"""Output tokens a step needs at the least; the low end of the estimate assumes this many."""
MIN_STEP_OUTPUT = 16
"""A step the budget left cannot afford this many output tokens for is not started."""


def steps_for(symbols: Sequence[str]) -> list[str]:
    steps = ["plan", *(f"analyse:{s}" for s in symbols)]
    if len(symbols) > 1:
        steps.append("compare")
    steps.append("draft")
    return steps


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The gateway's own prompt estimate for these messages (what its hold is based on)."""
    return CHAT.prompt_tokens({"messages": messages})


def hold_prompt(tokens: int) -> int:
    """The padded prompt the gateway holds for (gateway.handler._prompt_for_hold)."""
    return tokens + tokens // 8 + 16


def step_output(step: str, output_cap: int) -> int:
    return min(STEP_OUTPUT[prompts.step_kind(step)[0]], output_cap)


def max_tokens(price: Price, prompt: int, remaining_nanos: int, step: str, output_cap: int) -> int:
    """``max_tokens`` for a step whose hold must fit in ``remaining_nanos`` (0: it cannot)."""
    afford = pricing.affordable_output(price, hold_prompt(prompt), remaining_nanos)
    return max(0, min(step_output(step, output_cap), afford))


@dataclass(frozen=True, slots=True)
class Estimate:
    low_nanos: int
    """Every step's prompt at the input price plus ``LOW_OUTPUT`` tokens of output."""
    high_nanos: int
    """Every step's hold at its full output length, the notes of earlier steps included."""
    steps: int


def estimate(
    price: Price, output_cap: int, question: str, facts: Sequence[Any], steps: Sequence[str]
) -> Estimate:
    low = high = 0
    notes: list[tuple[str, str]] = []
    for step in steps:
        kind = prompts.step_kind(step)[0]
        bare = prompt_tokens(prompts.messages(step, question, facts))
        low += pricing.charge(price, bare, min(LOW_OUTPUT, output_cap))
        full = bare
        if kind in ("compare", "draft"):
            # the notes carry earlier outputs: at most their length, plus a label each
            full += sum(step_output(name, output_cap) + 8 for name, _ in notes)
        high += pricing.worst_case(price, hold_prompt(full), step_output(step, output_cap))
        notes.append((step, ""))
    return Estimate(low, high, len(steps))
