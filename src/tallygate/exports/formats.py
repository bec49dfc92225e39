"""CSV (RFC 4180, UTF-8, header row) and JSON Lines writers over typed columns.

Times are ISO 8601 UTC; money is an exact decimal string with its currency in its own column;
text cells that a spreadsheet would run as a formula (starting with = + - @ or a tab/CR) are
neutralised with a leading apostrophe. Numbers and money are never altered."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from tallygate.kit.clock import from_epoch_us
from tallygate.kit.money import to_decimal_string

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    kind: str = "text"  # text | int | money | time | bool | json
    doc: str = ""


def cell(col: Col, value: Any) -> str:
    if value is None:
        return ""
    if col.kind == "money":
        return to_decimal_string(int(value))
    if col.kind == "time":
        return iso(int(value))
    if col.kind == "bool":
        return "true" if value else "false"
    if col.kind == "int":
        return str(int(value))
    if col.kind == "json":
        return orjson.dumps(value).decode()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def iso(us: int) -> str:
    return from_epoch_us(us).isoformat().replace("+00:00", "Z")


def json_value(col: Col, value: Any) -> Any:
    if value is None:
        return None
    if col.kind == "money":
        return to_decimal_string(int(value))
    if col.kind == "time":
        return iso(int(value))
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
    n = 0
    for row in rows:
        writer.writerow([cell(c, row.get(c.name)) for c in columns])
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
