"""The facts of a data set, computed locally and exactly, never by a model.

Each :class:`Fact` has a stable key (``ACME.return_126d``), the exact value (a fraction for
percentages), the text the report cites (``12.34%``) and the convention it follows; the
conventions are written out in ``CONVENTIONS`` and in docs/research.md. A fact whose window the
data is too short for is simply absent."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

from tallygate.research.data import MarketData

if TYPE_CHECKING:  # pandas/numpy load on first use: the gateway's processes never pay for them
    import pandas as pd

TRADING_DAYS = 252
RETURN_WINDOWS = {5: "1-week", 21: "1-month", 63: "3-month", 126: "6-month"}
VOL_WINDOWS = {21: "1-month", 63: "3-month"}
MA_WINDOWS = (20, 50, 200)
RSI_PERIOD = 14
VOLUME_WINDOW = 20
VOLUME_SIGMAS = 2.0

CONVENTIONS: dict[str, str] = {
    "close": "Prices are daily closes as given in the data; no adjustment is made for splits or dividends.",
    "simple_return": "Simple return over N trading days: close[t] / close[t-N] - 1; the full-period return uses the first close.",
    "ytd_return": "Year-to-date return: the last close over the last close of the previous calendar year, minus 1.",
    "volatility": "Annualised volatility: the sample standard deviation (n-1) of daily simple returns over the window, times the square root of 252.",
    "drawdown": "Drawdown on close: close / running maximum close - 1; the maximum drawdown is its minimum, with the peak and trough dates.",
    "sma": "Simple moving average of the last N closes; price vs average is close / average - 1.",
    "crossover": "Crossover: the last day the shorter moving average crossed above (golden cross) or below (death cross) the longer one.",
    "rsi": "RSI(14) with Wilder's smoothing: average gain and loss seeded with the simple mean of the first 14 changes, then avg = (prev * 13 + current) / 14; RSI = 100 - 100 / (1 + gain / loss).",
    "correlation": "Pearson correlation of daily simple returns on the dates both symbols have.",
    "volume_anomaly": "A volume anomaly is a day whose volume exceeds the mean plus 2 sample standard deviations of the previous 20 days' volumes.",
}


@dataclass(frozen=True)
class Fact:
    key: str
    symbol: str | None
    label: str
    value: float
    display: str
    unit: str  # "percent" | "price" | "ratio" | "date" | "count" | "volume"
    convention: str


def pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _price(key: str, sym: str, label: str, value: float, convention: str = "close") -> Fact:
    return Fact(key, sym, label, float(value), f"{value:.2f}", "price", convention)


def _date(key: str, sym: str | None, label: str, day: pd.Timestamp, convention: str) -> Fact:
    d: dt.date = day.date()
    return Fact(key, sym, label, float(d.toordinal()), d.isoformat(), "date", convention)


def _percent(key: str, sym: str | None, label: str, value: float, convention: str) -> Fact:
    return Fact(key, sym, label, float(value), pct(value), "percent", convention)


def wilder_rsi(close: pd.Series, period: int = RSI_PERIOD) -> float | None:
    import numpy as np

    changes = np.diff(close.to_numpy(dtype="float64"))
    if len(changes) < period:
        return None
    gains = np.clip(changes, 0, None)
    losses = np.clip(-changes, 0, None)
    avg_gain = float(gains[:period].mean())
    avg_loss = float(losses[:period].mean())
    for g, lo in zip(gains[period:], losses[period:], strict=True):
        avg_gain = (avg_gain * (period - 1) + float(g)) / period
        avg_loss = (avg_loss * (period - 1) + float(lo)) / period
    if avg_loss == 0:
        return 100.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


def _last_cross(fast: pd.Series, slow: pd.Series) -> tuple[pd.Timestamp, str] | None:
    import numpy as np
    import pandas as pd

    both = pd.concat([fast, slow], axis=1).dropna()
    if len(both) < 2:
        return None
    above = (both.iloc[:, 0] > both.iloc[:, 1]).to_numpy()
    flips = np.flatnonzero(above[1:] != above[:-1])
    if len(flips) == 0:
        return None
    i = int(flips[-1]) + 1
    return both.index[i], ("golden" if above[i] else "death")


def symbol_facts(sym: str, frame: pd.DataFrame) -> list[Fact]:
    close = frame["close"]
    n = len(close)
    out = [
        _date(f"{sym}.first_date", sym, "first date", close.index[0], "close"),
        _date(f"{sym}.last_date", sym, "last date", close.index[-1], "close"),
        _price(f"{sym}.first_close", sym, "first close", close.iloc[0]),
        _price(f"{sym}.last_close", sym, "last close", close.iloc[-1]),
    ]
    last = float(close.iloc[-1])
    for days, name in RETURN_WINDOWS.items():
        if n > days:
            r = last / float(close.iloc[-1 - days]) - 1
            out.append(_percent(f"{sym}.return_{days}d", sym, f"{name} return", r, "simple_return"))
    out.append(
        _percent(
            f"{sym}.return_full",
            sym,
            "full-period return",
            last / float(close.iloc[0]) - 1,
            "simple_return",
        )
    )
    year = close.index[-1].year
    before = close[close.index.year < year]
    if len(before):
        r = last / float(before.iloc[-1]) - 1
        out.append(_percent(f"{sym}.return_ytd", sym, "year-to-date return", r, "ytd_return"))

    returns = close.pct_change().dropna()
    for days, name in VOL_WINDOWS.items():
        if len(returns) >= days:
            v = float(returns.iloc[-days:].std(ddof=1)) * math.sqrt(TRADING_DAYS)
            out.append(
                _percent(
                    f"{sym}.vol_{days}d", sym, f"{name} annualised volatility", v, "volatility"
                )
            )
    if len(returns) >= 2:
        v = float(returns.std(ddof=1)) * math.sqrt(TRADING_DAYS)
        out.append(
            _percent(f"{sym}.vol_full", sym, "full-period annualised volatility", v, "volatility")
        )

    peak = close.cummax()
    drawdown = close / peak - 1
    trough_at = drawdown.idxmin()
    peak_at = close.loc[:trough_at].idxmax()
    out += [
        _percent(f"{sym}.max_drawdown", sym, "maximum drawdown", float(drawdown.min()), "drawdown"),
        _date(f"{sym}.max_drawdown_peak", sym, "maximum drawdown peak date", peak_at, "drawdown"),
        _date(
            f"{sym}.max_drawdown_trough", sym, "maximum drawdown trough date", trough_at, "drawdown"
        ),
        _percent(
            f"{sym}.drawdown_now", sym, "current drawdown", float(drawdown.iloc[-1]), "drawdown"
        ),
    ]

    averages = {w: close.rolling(w).mean() for w in MA_WINDOWS if n >= w}
    for w, sma in averages.items():
        value = float(sma.iloc[-1])
        out.append(_price(f"{sym}.sma_{w}", sym, f"{w}-day moving average", value, "sma"))
        out.append(
            _percent(f"{sym}.vs_sma_{w}", sym, f"close vs {w}-day average", last / value - 1, "sma")
        )
    for fast, slow in ((20, 50), (50, 200)):
        if fast in averages and slow in averages:
            cross = _last_cross(averages[fast], averages[slow])
            if cross is not None:
                day, kind = cross
                out.append(
                    _date(
                        f"{sym}.cross_{fast}_{slow}",
                        sym,
                        f"last {fast}/{slow}-day {kind} cross",
                        day,
                        "crossover",
                    )
                )

    rsi = wilder_rsi(close)
    if rsi is not None:
        out.append(Fact(f"{sym}.rsi_14", sym, "14-day RSI", rsi, f"{rsi:.1f}", "ratio", "rsi"))

    volume = frame["volume"]
    if len(volume) > VOLUME_WINDOW:
        prior = volume.shift(1).rolling(VOLUME_WINDOW)
        limit = prior.mean() + VOLUME_SIGMAS * prior.std(ddof=1)
        spikes = volume[(volume > limit) & limit.notna()]
        out.append(
            Fact(
                f"{sym}.volume_anomalies",
                sym,
                "volume anomaly days",
                float(len(spikes)),
                str(len(spikes)),
                "count",
                "volume_anomaly",
            )
        )
        if len(spikes):
            out.append(
                _date(
                    f"{sym}.volume_anomaly_last",
                    sym,
                    "latest volume anomaly",
                    spikes.index[-1],
                    "volume_anomaly",
                )
            )
    return out


def compute_facts(data: MarketData) -> list[Fact]:
    import numpy as np
    import pandas as pd

    facts: list[Fact] = []
    for sym in data.symbols():
        facts += symbol_facts(sym, data.frames[sym])
    for a, b in combinations(data.symbols(), 2):
        ra = data.frames[a]["close"].pct_change()
        rb = data.frames[b]["close"].pct_change()
        both = pd.concat([ra, rb], axis=1, join="inner").dropna()
        if len(both) >= 3 and both.iloc[:, 0].std() > 0 and both.iloc[:, 1].std() > 0:
            c = float(np.corrcoef(both.iloc[:, 0], both.iloc[:, 1])[0, 1])
            facts.append(
                Fact(
                    f"corr.{a}.{b}",
                    None,
                    f"correlation of daily returns, {a} and {b}",
                    c,
                    f"{c:.2f}",
                    "ratio",
                    "correlation",
                )
            )
    return facts
