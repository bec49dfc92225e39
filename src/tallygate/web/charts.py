"""Spend over time as inline SVG, drawn on the server: no chart library, no outside asset.

One chart per bucket (their currencies never add up), a stacked bar per UTC day, one colour per
model, and beside it the same figures in a table. Every amount a person reads is an exact
integer of nano-units formatted by ``money``; floats only place pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

from tallygate.kit.clock import from_epoch_us
from tallygate.receipts.service import DAY_US, DailySpend
from tallygate.web.render import LABELS, money

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 8, 8, 18, 28
PALETTE = ("#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490", "#4d7c0f", "#9d174d")
"""Distinguishable on white and from one another; models beyond these repeat the colours."""


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(slots=True)
class DayRow:
    day: str
    per_model: dict[str, int]
    total_nanos: int
    requests: int


@dataclass(slots=True)
class Chart:
    bucket: str
    label: str
    currency: str
    models: list[tuple[str, str]]
    """(model, colour), in legend order."""
    bars: list[Bar] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)
    """(y, exact amount) of the horizontal grid lines."""
    day_labels: list[tuple[float, str]] = field(default_factory=list)
    rows: list[DayRow] = field(default_factory=list)
    total_nanos: int = 0
    model_totals: dict[str, int] = field(default_factory=dict)
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    plot_bottom: int = HEIGHT - BOTTOM


def _day(day_us: int) -> str:
    return from_epoch_us(day_us).strftime("%Y-%m-%d")


def spend_charts(
    spend: list[DailySpend], *, first_day_us: int, days: int, currencies: dict[str, str]
) -> list[Chart]:
    """A chart per bucket with any charge in the ``days`` UTC days from ``first_day_us``."""
    charts = []
    for bucket, currency in currencies.items():
        mine = [
            s
            for s in spend
            if s.bucket == bucket and first_day_us <= s.day_us < first_day_us + days * DAY_US
        ]
        if not any(s.charge_nanos for s in mine):
            continue
        models = sorted({s.model for s in mine})
        colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
        chart = Chart(bucket, LABELS[bucket], currency, [(m, colours[m]) for m in models])
        by_day: dict[int, DayRow] = {}
        for s in mine:
            row = by_day.setdefault(s.day_us, DayRow(_day(s.day_us), {}, 0, 0))
            row.per_model[s.model] = row.per_model.get(s.model, 0) + s.charge_nanos
            row.total_nanos += s.charge_nanos
            row.requests += s.requests
            chart.model_totals[s.model] = chart.model_totals.get(s.model, 0) + s.charge_nanos
        chart.rows = [by_day[d] for d in sorted(by_day)]
        chart.total_nanos = sum(r.total_nanos for r in chart.rows)
        top = max(r.total_nanos for r in chart.rows) or 1
        plot_h = chart.plot_bottom - TOP
        slot = (chart.plot_right - chart.plot_left) / days
        for tick in (top, top // 2):
            chart.ticks.append((chart.plot_bottom - plot_h * tick / top, money(tick, currency)))
        step = max(1, days // 6)
        for i in range(0, days, step):
            chart.day_labels.append(
                (chart.plot_left + slot * (i + 0.5), _day(first_day_us + i * DAY_US))
            )
        for day_us, row in sorted(by_day.items()):
            x = chart.plot_left + slot * ((day_us - first_day_us) // DAY_US) + slot * 0.1
            y = float(chart.plot_bottom)
            for model in models:
                amount = row.per_model.get(model, 0)
                if amount <= 0:
                    continue
                h = plot_h * amount / top
                y -= h
                chart.bars.append(
                    Bar(
                        x,
                        y,
                        slot * 0.8,
                        h,
                        colours[model],
                        f"{row.day} · {model}: {money(amount, currency)}",
                    )
                )
        charts.append(chart)
    return charts
