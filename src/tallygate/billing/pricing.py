"""Prices and charges: exact integers, rounded once per request, up, on the total.

Prices are integer nano-units per million tokens. A charge is
ceil((uncached_input × in + cached × cached_in + output × out) / 10^6) nano-units."""

from __future__ import annotations

from dataclasses import dataclass

from tallygate.kit.money import ceil_div

PER_M = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    version_id: int
    currency: str
    input_per_m: int
    output_per_m: int
    cached_input_per_m: int


def charge(price: Price, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
    cached = min(max(cached_tokens, 0), max(input_tokens, 0))
    exact = (
        (input_tokens - cached) * price.input_per_m
        + cached * price.cached_input_per_m
        + output_tokens * price.output_per_m
    )
    return ceil_div(max(exact, 0), PER_M)


def worst_case(price: Price, prompt_tokens: int, max_output: int) -> int:
    """The hold: every prompt token at the full input price plus ``max_output`` tokens."""
    return ceil_div(prompt_tokens * price.input_per_m + max_output * price.output_per_m, PER_M)


def affordable_output(price: Price, prompt_tokens: int, available_nanos: int) -> int:
    """How many output tokens ``available_nanos`` pays for after the prompt (0 if none)."""
    budget = available_nanos * PER_M - prompt_tokens * price.input_per_m
    if budget <= 0:
        return 0
    if price.output_per_m == 0:
        return 2**31 - 1
    return budget // price.output_per_m
