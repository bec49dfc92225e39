"""The documented column reference (docs/exports.md, parsed) and typed cell checks."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

DOC = Path(__file__).resolve().parents[2] / "docs" / "exports.md"
SECTIONS = {
    "requests": "## Requests",
    "ledger": "## Wallet ledger",
    "audit": "## Audit trail",
    "usage": "## Usage report",
    "topups": "## Top-ups",
    "refunds": "## Refunds",
    "redemptions": "## Redemptions",
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([a-z_]+)`\s*\|\s*(\w+)\s*\|")


class AnyInt:
    """A non-negative integer whose exact value the scenario cannot know (latencies)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and not isinstance(other, bool) and other >= 0

    def __repr__(self) -> str:
        return "<any int ≥ 0>"


ANY_INT = AnyInt()


def doc_columns(name: str) -> list[tuple[str, str]]:
    """(column, type) in the documented order, numbered 1..n without gaps."""
    lines = DOC.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(SECTIONS[name])))
    found: list[tuple[str, str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        m = _ROW.match(line)
        if m:
            assert int(m.group(1)) == len(found) + 1, f"{name}: column numbers skip at {line}"
            found.append((m.group(2), m.group(3)))
    assert found, f"no column table under {SECTIONS[name]!r}"
    return found


def neutral(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text


def iso_to_us(text: str) -> int:
    assert text.endswith("Z"), text
    when = dt.datetime.fromisoformat(text[:-1] + "+00:00")
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def money(nanos: int) -> Decimal:
    return Decimal(nanos) / Decimal(10**9)


def check_csv_cell(kind: str, cell: str, expected: Any, where: str) -> None:
    """``expected`` is the typed value (nanos for money, epoch µs for time); None = empty."""
    if expected is None:
        assert cell == "", f"{where}: expected an empty cell, got {cell!r}"
    elif kind == "money":
        assert Decimal(cell) == money(expected), f"{where}: {cell!r} != {expected} nanos"
        assert re.fullmatch(r"-?\d+\.\d+", cell), f"{where}: {cell!r} is not a plain decimal"
    elif kind == "time":
        assert iso_to_us(cell) == expected, f"{where}: {cell!r} != {expected} µs"
    elif kind == "bool":
        assert cell == ("true" if expected else "false"), f"{where}: {cell!r}"
    elif kind == "int":
        assert expected == int(cell), f"{where}: {cell!r} != {expected!r}"
    elif kind == "json":
        assert orjson.loads(cell) == expected, f"{where}: {cell!r} != {expected!r}"
    else:
        assert cell == neutral(str(expected)), f"{where}: {cell!r} != {neutral(str(expected))!r}"


def check_json_value(kind: str, value: Any, expected: Any, where: str) -> None:
    if expected is None:
        assert value is None, f"{where}: expected null, got {value!r}"
    elif kind == "money":
        assert isinstance(value, str) and Decimal(value) == money(expected), f"{where}: {value!r}"
    elif kind == "time":
        assert iso_to_us(value) == expected, f"{where}: {value!r}"
    elif kind == "bool":
        assert value is bool(expected), f"{where}: {value!r}"
    elif kind == "int":
        assert expected == value and not isinstance(value, bool), f"{where}: {value!r}"
    else:
        assert value == expected, f"{where}: {value!r} != {expected!r}"
