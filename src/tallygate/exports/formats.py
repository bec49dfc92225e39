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
    # text whose values rarely repeat (request ids): the CSV fast path checks each value
    # instead of caching its field
    distinct: bool = False


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
    """``iso``, inlined for the export's hot loop (the same text)."""
    if value is None:
        return ""
    seconds, micro = divmod(value if value.__class__ is int else int(value), 1_000_000)
    stamp = _second(seconds)
    return f"{stamp}.{micro:06d}Z" if micro else stamp + "Z"


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


# ---- CSV from positional rows (the big exports' fast path) ------------------------------------

_CACHE_LIMIT = 4096  # text fields remembered per export stream (bounded: memory stays flat)


def csv_field(text: str) -> str:
    """``text`` as ``csv.writer`` writes it (RFC 4180, QUOTE_MINIMAL, CRLF lines): quoted,
    with quotes doubled, when it holds a comma, a quote or a line break."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def text_field(value: Any) -> str:
    """A text cell as it lands in the file: ``_text`` (neutralised), then ``csv_field``."""
    return csv_field(_text(value))


def _piece(col: Col, v: str) -> str:
    """An expression for one cell's final CSV text (already quoted if it needs to be)."""
    kind = col.kind
    if kind == "text" and col.distinct:  # an identifier needs no apostrophe and no quotes
        return f"({v} if {v}.__class__ is str and {v}.isidentifier() else text_field({v}))"
    if kind == "text":  # labels, models, statuses repeat row after row: their field is cached
        return f"(x if (x := get({v})) is not None else miss({v}))"
    if kind == "int":  # digits never need quoting
        return f"({v} if {v}.__class__ is int else '' if {v} is None else _int({v}))"
    if kind == "money" and col.name.endswith("_per_m"):  # prices repeat: their text is cached
        return f"_price({v})"
    if kind == "money":
        return f"('' if {v} is None else _money({v}))"
    if kind == "time":
        return f"_time({v})"
    if kind == "bool":
        return f"('' if {v} is None else 'true' if {v} else 'false')"
    return f"csv_field(_{kind}({v}))"  # decimal, json: never neutralised, quoted if need be


@lru_cache(maxsize=64)
def _batch_renderer_factory(columns: tuple[Col, ...]) -> Callable[[int], Callable[[Any], str]]:
    names = [f"v{i}" for i in range(len(columns))]
    line = ",".join("{" + _piece(c, v) + "}" for c, v in zip(columns, names, strict=True))
    source = (
        "def make(limit):\n"
        "    cache = {}\n"
        "    get = cache.get\n"
        "    _price = lru_cache(maxsize=1024)(_money)\n"
        "    def miss(value):\n"
        "        field = text_field(value)\n"
        "        if value.__class__ is str:\n"
        "            if len(cache) >= limit:\n"
        "                cache.clear()\n"
        "            cache[value] = field\n"
        "        return field\n"
        "    def render(rows):\n"
        "        out = []\n"
        "        append = out.append\n"
        f"        for ({', '.join(names)},) in rows:\n"
        f'            append(f"{line}\\r\\n")\n'
        '        return "".join(out)\n'
        "    return render\n"
    )
    namespace: dict[str, Any] = {
        "lru_cache": lru_cache,
        "text_field": text_field,
        "csv_field": csv_field,
        **{f"_{kind}": fn for kind, fn in CONVERTERS.items()},
    }
    exec(compile(source, "<export batch renderer>", "exec"), namespace)  # noqa: S102 - no user text in the source
    make: Callable[[int], Callable[[Any], str]] = namespace["make"]
    return make


def batch_renderer(
    columns: Sequence[Col], cache_limit: int = _CACHE_LIMIT
) -> Callable[[Iterable[Sequence[Any]]], str]:
    """A function turning a batch of rows — sequences of values in ``columns`` order — into
    their CSV lines, the same text ``csv_lines`` writes for the same rows: generated once per
    column list, one f-string per row, each cell's final text built inline (digits, money,
    times never need quoting; text fields are neutralised and quoted once per distinct
    value, then cached for this stream)."""
    if len(columns) < 2:  # csv.writer writes a lone empty field as "": leave that to it
        writer_render = row_renderer(tuple(columns))
        names = [c.name for c in columns]

        def render(rows: Iterable[Sequence[Any]]) -> str:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\r\n")
            writer.writerows(writer_render(dict(zip(names, r, strict=True))) for r in rows)
            return buffer.getvalue()

        return render
    return _batch_renderer_factory(tuple(columns))(cache_limit)


def csv_batches(
    columns: Sequence[Col], batches: Iterable[Sequence[Sequence[Any]]]
) -> Iterator[bytes]:
    """CSV bytes from batches of positional rows (see ``batch_renderer``): the header, then one
    chunk per batch."""
    render = batch_renderer(columns)
    header = io.StringIO()
    csv.writer(header, lineterminator="\r\n").writerow([c.name for c in columns])
    yield header.getvalue().encode()
    for rows in batches:
        if rows:
            yield render(rows).encode()


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
