"""Market data in: CSV files of dated OHLCV rows, one or several symbols, checked row by row.

Every refusal is a :class:`MarketDataError` (HTTP 400, ``invalid_market_data``) whose message
names the row, the column and the problem, so a person can fix the file; nothing is charged for
a run whose data is refused (the data is parsed before any model call)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from tallygate.errors import BadRequest

if TYPE_CHECKING:  # pandas/numpy load on first use: the gateway's processes never pay for them
    import pandas as pd

REQUIRED = ("date", "open", "high", "low", "close", "volume")
PRICES = ("open", "high", "low", "close")
MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 200_000

SAMPLES: dict[str, str] = {
    "two-tickers": "ACME and BOLT, two fictional tickers, daily OHLCV for 2025-01-02 to 2026-06-30",
}


class MarketDataError(BadRequest):
    code = "invalid_market_data"


@dataclass(frozen=True)
class Coverage:
    symbol: str
    first: dt.date
    last: dt.date
    rows: int


@dataclass(frozen=True)
class MarketData:
    frames: dict[str, pd.DataFrame]
    """Per symbol: a DatetimeIndex ascending, float columns open high low close volume."""

    def symbols(self) -> list[str]:
        return sorted(self.frames)

    def coverage(self) -> list[Coverage]:
        return [
            Coverage(s, f.index[0].date(), f.index[-1].date(), len(f))
            for s, f in sorted(self.frames.items())
        ]


def _text(data: str | bytes) -> str:
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise MarketDataError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MarketDataError(
                f"the file is not UTF-8 text (byte {exc.start} cannot be read)"
            ) from None
    if len(data) > MAX_BYTES:
        raise MarketDataError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB")
    return data.lstrip("\ufeff")


def _number(raw: str, line: int, column: str) -> float:
    text = raw.strip().replace(",", "") if raw else ""
    try:
        value = float(text)
    except ValueError:
        shown = raw if len(raw) <= 30 else raw[:27] + "..."
        raise MarketDataError(f"row {line}: {column} {shown!r} is not a number") from None
    if not math.isfinite(value):
        raise MarketDataError(f"row {line}: {column} {raw!r} is not a finite number")
    return value


def _date(raw: str, line: int) -> dt.date:
    try:
        return dt.date.fromisoformat(raw.strip()[:10]) if raw.strip() else _bad_date(raw, line)
    except ValueError:
        return _bad_date(raw, line)


def _bad_date(raw: str, line: int) -> dt.date:
    raise MarketDataError(f"row {line}: date {raw!r} is not a date in YYYY-MM-DD form")


def parse_csv(data: str | bytes, *, symbol: str | None = None) -> MarketData:
    """Rows ``date,[symbol,]open,high,low,close,volume`` (header names case-insensitive)."""
    import pandas as pd

    text = _text(data)
    if not text.strip():
        raise MarketDataError("the file is empty")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except csv.Error as exc:
        raise MarketDataError(f"the file is not CSV: {exc}") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise MarketDataError(
            f"missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
            f"(expected date,{'' if symbol else '[symbol,]'}open,high,low,close,volume)"
        )
    has_symbol = "symbol" in header
    if not has_symbol and not symbol:
        symbol = "DATA"
    at = {c: header.index(c) for c in (*REQUIRED, *(("symbol",) if has_symbol else ()))}
    rows: dict[str, dict[dt.date, tuple[float, ...]]] = {}
    line = 1
    try:
        for record in reader:
            line += 1
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) < len(header):
                raise MarketDataError(
                    f"row {line}: {len(record)} values where the header has {len(header)}"
                )
            if line > MAX_ROWS + 1:
                raise MarketDataError(f"more than {MAX_ROWS:,} rows")
            sym = record[at["symbol"]].strip().upper() if has_symbol else str(symbol).upper()
            if not sym:
                raise MarketDataError(f"row {line}: symbol is empty")
            day = _date(record[at["date"]], line)
            values = tuple(_number(record[at[c]], line, c) for c in (*PRICES, "volume"))
            for column, value in zip(PRICES, values, strict=False):
                if value <= 0:
                    raise MarketDataError(f"row {line}: {column} must be above zero")
            if values[4] < 0:
                raise MarketDataError(f"row {line}: volume cannot be negative")
            o, h, lo, c, _ = values
            if h < max(o, c, lo) or lo > min(o, c, h):
                raise MarketDataError(
                    f"row {line}: high/low ({h:g}/{lo:g}) do not contain open and close"
                )
            series = rows.setdefault(sym, {})
            if day in series:
                raise MarketDataError(f"row {line}: {sym} has the date {day} twice")
            series[day] = values
    except csv.Error as exc:
        raise MarketDataError(f"row {line}: not valid CSV ({exc})") from None
    if not rows:
        raise MarketDataError("the file has a header but no rows")
    frames = {}
    for sym, series in rows.items():
        if len(series) < 2:
            raise MarketDataError(
                f"{sym} has only {len(series)} row: at least 2 dated rows are needed"
            )
        days = sorted(series)
        frame = pd.DataFrame(
            [series[d] for d in days],
            index=pd.DatetimeIndex([pd.Timestamp(d) for d in days], name="date"),
            columns=[*PRICES, "volume"],
            dtype="float64",
        )
        frames[sym] = frame
    return MarketData(frames)


def merge(*parts: MarketData) -> MarketData:
    """Several files into one data set; a symbol in two files is refused (which one is right?)."""
    frames: dict[str, pd.DataFrame] = {}
    for part in parts:
        for sym, frame in part.frames.items():
            if sym in frames:
                raise MarketDataError(f"{sym} appears in more than one file")
            frames[sym] = frame
    return MarketData(frames)


def load_sample(name: str = "two-tickers") -> MarketData:
    if name not in SAMPLES:
        raise MarketDataError(f"unknown sample data set {name!r}")
    text = resources.files("tallygate.research.samples").joinpath(f"{name}.csv").read_text()
    return parse_csv(text)
