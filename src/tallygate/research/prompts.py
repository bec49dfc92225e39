"""The messages of each workflow step. The facts travel in a plain ``FACTS:`` block, one
``- key | symbol | label | display`` line each, so a model (and the demo upstream) can cite them
exactly as the report shows them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

MARKER = "You are Tallygate's research assistant."
"""The first words of every step's system message (the demo upstream recognises them)."""

SYSTEM = (
    MARKER + " You write trading research support, not financial advice. Every figure you cite "
    "must come from the FACTS block, written exactly as it is displayed there; never compute or "
    "invent a number. Be brief."
)

INSTRUCTIONS = {
    "plan": "Write a short plan (three numbered points) for answering the question.",
    "analyse": "Analyse {symbol}: trend, volatility, drawdown and momentum, citing its facts.",
    "compare": "Compare the symbols, citing the facts that differ most and any correlation.",
    "draft": (
        "Draft the final analysis answering the question: trend, volatility, drawdowns, and "
        "what would change the picture. Cite the facts exactly as displayed."
    ),
}


class FactLike(Protocol):
    key: str
    symbol: str | None
    label: str
    display: str


def facts_block(facts: Sequence[FactLike]) -> str:
    return "\n".join(f"- {f.key} | {f.symbol or '*'} | {f.label} | {f.display}" for f in facts)


def step_kind(step: str) -> tuple[str, str | None]:
    """``analyse:ACME`` → (``analyse``, ``ACME``); other steps have no symbol."""
    kind, _, symbol = step.partition(":")
    return kind, symbol or None


def messages(
    step: str, question: str, facts: Sequence[FactLike], notes: Sequence[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    kind, symbol = step_kind(step)
    shown = [f for f in facts if symbol is None or f.symbol in (symbol, None)]
    parts = [
        f"STEP: {step}",
        f"QUESTION: {question}",
        INSTRUCTIONS[kind].format(symbol=symbol),
        "FACTS:",
        facts_block(shown),
    ]
    if notes:
        parts.append("NOTES:")
        parts.extend(f"[{name}] {text}" for name, text in notes)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(parts)}]
