"""CSV (RFC 4180, UTF-8, header row) and JSON Lines writers over typed columns.

Times are ISO 8601 UTC; money is an exact decimal string with its currency in its own column;
text cells that a spreadsheet would run as a formula (starting with = + - @ or a tab/CR) are
neutralised with a leading apostrophe. Numbers and money are never altered."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import to_decimal_string

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    kind: str = "text"  # text | int | money | decimal | time | bool | json
    doc: str = ""


def cell(col: Col, value: Any) -> str:
    return CONVERTERS[col.kind](value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = value if value.__class__ is str else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _money(value: Any) -> str:
    """``to_decimal_string``, inlined for the export's hot loop (the same text)."""
    if value is None:
        return ""
    n = value if value.__class__ is int else int(value)
    sign = ""
    if n < 0:
        sign, n = "-", -n
    whole, frac = divmod(n, 1_000_000_000)
    if not frac:
        return f"{sign}{whole}.00"
    digits = f"{frac:09d}".rstrip("0")
    return f"{sign}{whole}.{digits:0<2}"


def _decimal(value: Any) -> str:
    """An exact decimal already written as text (a payment amount in its currency's minor
    digits, a rate): passed through, never neutralised — it is a number, not a formula."""
    return "" if value is None else str(value)


def _time(value: Any) -> str:
    return "" if value is None else iso(int(value))


def _bool(value: Any) -> str:
    return "" if value is None else ("true" if value else "false")


def _int(value: Any) -> str:
    return "" if value is None else str(int(value))


def _json(value: Any) -> str:
    return "" if value is None else orjson.dumps(value).decode()


CONVERTERS: dict[str, Callable[[Any], str]] = {
    "text": _text,
    "money": _money,
    "decimal": _decimal,
    "time": _time,
    "bool": _bool,
    "int": _int,
    "json": _json,
}


_FORMULA_FIRST = frozenset(FORMULA_START)
# Per column kind, an expression for one cell of ``row`` (``g`` is ``row.get``), inlining the
# common case (a str that needs no apostrophe, an int) and calling the converter otherwise.
_CELL = {
    "text": "(x if (x := g({k})).__class__ is str and x[:1] not in FIRST else _text(x))",
    "int": "(str(x) if (x := g({k})).__class__ is int else _int(x))",
    "money": "_money(g({k}))",
    "decimal": "_decimal(g({k}))",
    "time": "_time(g({k}))",
    "bool": "_bool(g({k}))",
    "json": "_json(g({k}))",
}


@lru_cache(maxsize=64)
def row_renderer(columns: tuple[Col, ...]) -> Callable[[Mapping[str, Any]], list[str]]:
    """A function turning one row into its CSV cells — generated once per column list, so the
    per-row work is one call instead of one per cell (the export's hot loop: 40 columns ×
    a million rows). Same cells as ``[cell(c, row.get(c.name)) for c in columns]``."""
    cells = ", ".join(
        # prices repeat row after row: their text is cached
        f"_price(g({repr(c.name)}))"
        if c.kind == "money" and c.name.endswith("_per_m")
        else _CELL[c.kind].format(k=repr(c.name))
        for c in columns
    )
    source = f"def render(row):\n    g = row.get\n    return [{cells}]\n"
    namespace: dict[str, Any] = {
        "FIRST": _FORMULA_FIRST,
        "_price": lru_cache(maxsize=1024)(_money),
        **{f"_{kind}": fn for kind, fn in CONVERTERS.items()},
    }
    exec(compile(source, "<export row renderer>", "exec"), namespace)  # noqa: S102 - column names are repr()-quoted constants
    render: Callable[[Mapping[str, Any]], list[str]] = namespace["render"]
    return render


def iso(us: int) -> str:
    """ISO 8601 UTC with a Z, microseconds when there are any (as ``datetime.isoformat``)."""
    seconds, micro = divmod(us, 1_000_000)
    stamp = _second(seconds)
    return f"{stamp}.{micro:06d}Z" if micro else stamp + "Z"


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return from_epoch_us(seconds * 1_000_000).isoformat().replace("+00:00", "")


def json_value(col: Col, value: Any) -> Any:
    if value is None:
        return None
    if col.kind == "money":
        return to_decimal_string(int(value))
    if col.kind == "time":
        return iso(int(value))
    if col.kind == "decimal":
        return str(value)
    if col.kind == "bool":
        return bool(value)
    if col.kind == "int":
        return int(value)
    return value


def csv_lines(
    columns: Sequence[Col], rows: Iterable[Mapping[str, Any]], batch: int = 500
) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.name for c in columns])
    render = row_renderer(tuple(columns))
    writerow = writer.writerow
    n = 0
    for row in rows:
        writerow(render(row))
        n += 1
        if n % batch == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def jsonl_lines(
    columns: Sequence[Col],
    rows: Iterable[Mapping[str, Any]],
    extra: Sequence[str] = (),
    batch: int = 500,
) -> Iterator[bytes]:
    chunk: list[bytes] = []
    for row in rows:
        record = {c.name: json_value(c, row.get(c.name)) for c in columns}
        for name in extra:
            record[name] = row.get(name)
        chunk.append(orjson.dumps(record))
        if len(chunk) >= batch:
            yield b"\n".join(chunk) + b"\n"
            chunk = []
    if chunk:
        yield b"\n".join(chunk) + b"\n"
