"""What the demo upstream answers to a research step: a plausible text that cites facts it was
given, exactly as displayed (so ``tallygate demo`` shows a real report whose self-check passes).

No model is involved: the reply is assembled from the step's ``FACTS:`` block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tallygate.research.prompts import MARKER


@dataclass(frozen=True, slots=True)
class GivenFact:
    key: str
    symbol: str | None
    label: str
    display: str


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def parse(prompt: str) -> tuple[str, str, list[GivenFact]]:
    """(step, question, facts) of a research step's user message."""
    step = question = ""
    facts: list[GivenFact] = []
    in_facts = False
    for line in prompt.splitlines():
        if line.startswith("STEP: "):
            step = line[6:].strip()
        elif line.startswith("QUESTION: "):
            question = line[10:].strip()
        elif line.strip() == "FACTS:":
            in_facts = True
        elif line.strip() == "NOTES:":
            in_facts = False
        elif in_facts and line.startswith("- "):
            cells = [c.strip() for c in line[2:].split(" | ")]
            if len(cells) == 4:
                symbol = None if cells[1] == "*" else cells[1]
                facts.append(GivenFact(cells[0], symbol, cells[2], cells[3]))
    return step, question, facts


def _cite(f: GivenFact) -> str:
    return f"{f.symbol + ' ' if f.symbol else ''}{f.label} {f.display}"


def _pick(facts: Sequence[GivenFact], n: int) -> list[GivenFact]:
    return list(facts[:n])


def plan_text(question: str, facts: Sequence[GivenFact]) -> str:
    symbols = sorted({f.symbol for f in facts if f.symbol})
    return (
        f"Plan: first, read the trend, volatility and drawdown of {', '.join(symbols)}; "
        "second, compare them side by side; third, name what would change the picture."
    )


def analyse_text(symbol: str, facts: Sequence[GivenFact]) -> str:
    own = [f for f in facts if f.symbol == symbol]
    if not own:
        return f"{symbol}: no facts were computed for this symbol."
    cited = "; ".join(_cite(f) for f in _pick(own, 4))
    return f"{symbol}: {cited}."


def compare_text(facts: Sequence[GivenFact]) -> str:
    by_symbol: dict[str, GivenFact] = {}
    for f in facts:
        if f.symbol and f.symbol not in by_symbol:
            by_symbol[f.symbol] = f
    cross = [f for f in facts if f.symbol is None][:2]
    parts = [_cite(f) for f in [*by_symbol.values(), *cross]]
    return "Side by side: " + "; ".join(parts) + "." if parts else "Nothing to compare."


def draft_text(question: str, facts: Sequence[GivenFact]) -> str:
    symbols = sorted({f.symbol for f in facts if f.symbol})
    lines = [f"Question: {question}", ""]
    for symbol in symbols:
        lines.append(analyse_text(symbol, facts))
    cross = [f for f in facts if f.symbol is None][:2]
    if cross:
        lines.append("Together: " + "; ".join(_cite(f) for f in cross) + ".")
    lines.append(
        "What would change the picture: a break of the recent trend, a rise in volatility or a "
        "deeper drawdown than the ones above. Research support, not financial advice."
    )
    return "\n".join(lines)


def reply(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The demo's answer to a research step, or None when ``messages`` are not one."""
    if not messages or not _text(messages[0].get("content")).startswith(MARKER):
        return None
    step, question, facts = parse(_text(messages[-1].get("content")))
    kind, _, symbol = step.partition(":")
    if kind == "plan":
        return plan_text(question, facts)
    if kind == "analyse":
        return analyse_text(symbol, facts)
    if kind == "compare":
        return compare_text(facts)
    return draft_text(question, facts)
