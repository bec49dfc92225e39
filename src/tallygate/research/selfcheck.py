"""The self-check: every figure an analysis cites must be one of the computed facts.

Cited figures are percentages (``-12.3%``), dates (``2026-03-17``) and decimal numbers
(``182.40``, ``0.21``); whole numbers without a unit are read as window lengths ("14-day",
"200-day") and left alone. A figure matches a fact of the same kind when it equals the fact's
value at the precision the text wrote it with (``12.3%`` matches 12.34%), its sign aside for a
falling percentage ("fell 25.3%"). When the sentence names symbols, only their facts (and the
cross-symbol ones) count, so BOLT's figure cited as ACME's is a mismatch."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from tallygate.research.facts import Fact

FIGURE = re.compile(
    r"(?<![\w.])(?P<date>\d{4}-\d{2}-\d{2})(?![\w-]|\.\d)"
    r"|(?<![\w.])(?P<num>[-−+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-−+]?\d+\.\d+|[-−+]?\d+)(?P<pct>\s?%)?(?!\w|\.\d)"
)
SENTENCE_END = re.compile(r"[.!?;\n](?:\s|$)")
KINDS = {"percent": ("percent",), "number": ("price", "ratio"), "date": ("date",)}


@dataclass(frozen=True)
class Citation:
    text: str
    value: float
    unit: str  # "percent" | "number" | "date"
    matched: Fact | None
    ok: bool
    note: str


@dataclass(frozen=True)
class SelfCheck:
    citations: list[Citation]

    @property
    def mismatches(self) -> list[Citation]:
        return [c for c in self.citations if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _sentence(text: str, start: int, end: int) -> str:
    left = max((m.end() for m in SENTENCE_END.finditer(text, 0, start)), default=0)
    right = SENTENCE_END.search(text, end)
    return text[left : right.start() if right else len(text)]


def _cited_value(fact: Fact, unit: str) -> float:
    return fact.value * 100 if unit == "percent" else fact.value


def _close(fact: Fact, unit: str, value: float, decimals: int) -> bool:
    tolerance = 0.5 * 10**-decimals + 1e-9
    have = _cited_value(fact, unit)
    if abs(have - value) <= tolerance:
        return True
    return unit == "percent" and have < 0 < value and abs(-have - value) <= tolerance


def check(text: str, facts: list[Fact]) -> SelfCheck:
    symbols = sorted({f.symbol for f in facts if f.symbol}, key=len, reverse=True)
    citations: list[Citation] = []
    for m in FIGURE.finditer(text):
        if m.group("date"):
            try:
                day = dt.date.fromisoformat(m.group("date"))
            except ValueError:
                continue
            unit, value, decimals = "date", float(day.toordinal()), 0
        else:
            raw = m.group("num").replace("−", "-").replace(",", "")
            if m.group("pct"):
                unit = "percent"
            elif "." in raw:
                unit = "number"
            else:
                continue  # a whole number without a unit: a window length or a count
            value = float(raw)
            decimals = len(raw.split(".", 1)[1]) if "." in raw else 0
        sentence = _sentence(text, m.start(), m.end())
        named = [s for s in symbols if re.search(rf"\b{re.escape(s)}\b", sentence)]
        pool = [
            f
            for f in facts
            if f.unit in KINDS[unit] and (not named or f.symbol is None or f.symbol in named)
        ]
        match = next((f for f in pool if _close(f, unit, value, decimals)), None)
        if match is not None:
            citations.append(Citation(m.group(0).strip(), value, unit, match, True, match.key))
            continue
        others = [f for f in facts if f.unit in KINDS[unit] and _close(f, unit, value, decimals)]
        if others:
            note = f"matches {others[0].key}, not a fact of {', '.join(named)}"
        else:
            kin = [f for f in pool or facts if f.unit in KINDS[unit]]
            nearest = min(kin, key=lambda f: abs(_cited_value(f, unit) - value), default=None)
            note = (
                f"no computed fact has this value; the nearest is {nearest.key} = {nearest.display}"
                if nearest
                else "no computed fact of this kind"
            )
        citations.append(Citation(m.group(0).strip(), value, unit, None, False, note))
    return SelfCheck(citations)
