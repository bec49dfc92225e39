"""Charts as inline SVG, drawn on the server: price with its 20- and 50-day averages, drawdown
on close, and rolling 21-day annualised volatility, per symbol. No script, no external asset;
each chart has a <title> and a <desc> for screen readers and is deterministic for the same data."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

from tallygate.research.data import MarketData
from tallygate.research.facts import TRADING_DAYS

if TYPE_CHECKING:  # pandas/numpy load on first use: the gateway's processes never pay for them
    import pandas as pd

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 28, 28
COLORS = ("#1f5fbf", "#c0392b", "#2e8b57")


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def line_chart(
    title: str,
    desc: str,
    index: pd.DatetimeIndex,
    series: list[tuple[str, pd.Series]],
    y_label: str,
    percent: bool = False,
) -> str:
    values = [v for _, s in series for v in s.dropna().to_numpy() if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi == lo:
        hi, lo = hi + 1, lo - 1
    n = max(len(index) - 1, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + plot_w * i / n

    def y(v: float) -> float:
        return TOP + plot_h * (hi - v) / (hi - lo)

    def tick(v: float) -> str:
        return f"{v * 100:.0f}%" if percent else f"{v:,.2f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'class="chart">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(desc)}</desc>",
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#888"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        parts.append(
            f'<text x="{LEFT - 4}" y="{_fmt(y(v) + 4)}" font-size="10" text-anchor="end">{tick(v)}</text>'
        )
    if len(index):
        parts.append(
            f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="10">{index[0].date().isoformat()}</text>'
        )
        parts.append(
            f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" font-size="10" text-anchor="end">'
            f"{index[-1].date().isoformat()}</text>"
        )
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) // 2}" y="{HEIGHT - 8}" font-size="10" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    for k, (name, s) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        points = " ".join(
            f"{_fmt(x(i))},{_fmt(y(float(v)))}"
            for i, v in enumerate(s.to_numpy())
            if math.isfinite(float(v))
        )
        parts.append(
            f'<polyline data-series="{escape(name)}" fill="none" stroke="{color}" '
            f'stroke-width="1.5" points="{points}"/>'
        )
        parts.append(
            f'<text x="{LEFT + 8 + 110 * k}" y="{TOP + 12}" font-size="10" fill="{color}">'
            f"{escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def charts(data: MarketData) -> dict[str, str]:
    import pandas as pd

    out: dict[str, str] = {}
    for sym in data.symbols():
        close = data.frames[sym]["close"]
        idx = pd.DatetimeIndex(close.index)
        out[f"price:{sym}"] = line_chart(
            f"{sym} close with 20- and 50-day averages",
            f"Daily close of {sym} from {idx[0].date()} to {idx[-1].date()} "
            "with its 20-day and 50-day simple moving averages.",
            idx,
            [
                ("close", close),
                ("MA20", close.rolling(20).mean()),
                ("MA50", close.rolling(50).mean()),
            ],
            "price",
        )
        drawdown = close / close.cummax() - 1
        out[f"drawdown:{sym}"] = line_chart(
            f"{sym} drawdown from the running peak",
            f"Drawdown on close of {sym}; the lowest point is the maximum drawdown.",
            idx,
            [("drawdown", drawdown)],
            "drawdown",
            percent=True,
        )
        vol = close.pct_change().rolling(21).std(ddof=1) * math.sqrt(TRADING_DAYS)
        out[f"volatility:{sym}"] = line_chart(
            f"{sym} rolling 21-day annualised volatility",
            f"Sample standard deviation of {sym}'s daily returns over 21 days, times sqrt(252).",
            idx,
            [("volatility", vol)],
            "annualised volatility",
            percent=True,
        )
    return out
