"""The facts equal an independent computation in plain Python (statistics module and loops, no
pandas), on the shipped sample and on small series whose answers are known exactly."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pytest

from tallygate.research.data import MarketData, load_sample, parse_csv
from tallygate.research.facts import CONVENTIONS, Fact, compute_facts


def rows(closes: list[float], volumes: list[float] | None = None, symbol: str = "T") -> str:
    start = dt.date(2026, 1, 1)
    lines = ["date,symbol,open,high,low,close,volume"]
    for i, c in enumerate(closes):
        v = volumes[i] if volumes else 1000
        lines.append(f"{start + dt.timedelta(days=i)},{symbol},{c},{c},{c},{c},{v}")
    return "\n".join(lines)


def by_key(data: MarketData) -> dict[str, Fact]:
    return {f.key: f for f in compute_facts(data)}


def closes_of(data: MarketData, sym: str) -> list[float]:
    return [float(v) for v in data.frames[sym]["close"]]


def ref_returns(c: list[float]) -> list[float]:
    return [c[i] / c[i - 1] - 1 for i in range(1, len(c))]


def ref_rsi(c: list[float], period: int = 14) -> float:
    changes = [c[i] - c[i - 1] for i in range(1, len(c))]
    gain = sum(max(x, 0) for x in changes[:period]) / period
    loss = sum(max(-x, 0) for x in changes[:period]) / period
    for x in changes[period:]:
        gain = (gain * (period - 1) + max(x, 0)) / period
        loss = (loss * (period - 1) + max(-x, 0)) / period
    return 100.0 if loss == 0 else 100 - 100 / (1 + gain / loss)


def ref_max_drawdown(c: list[float]) -> float:
    peak, worst = c[0], 0.0
    for x in c:
        peak = max(peak, x)
        worst = min(worst, x / peak - 1)
    return worst


def ref_corr(a: list[float], b: list[float]) -> float:
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


class TestOnTheShippedSample:
    data = load_sample("two-tickers")
    facts = by_key(data)

    @pytest.mark.parametrize("sym", ["ACME", "BOLT"])
    def test_returns_volatility_drawdown_averages_rsi(self, sym: str) -> None:
        c = closes_of(self.data, sym)
        f = self.facts
        assert f[f"{sym}.last_close"].value == c[-1]
        for n in (5, 21, 63, 126):
            assert f[f"{sym}.return_{n}d"].value == pytest.approx(c[-1] / c[-1 - n] - 1, abs=1e-12)
        assert f[f"{sym}.return_full"].value == pytest.approx(c[-1] / c[0] - 1, abs=1e-12)
        r = ref_returns(c)
        for n in (21, 63):
            expected = statistics.stdev(r[-n:]) * math.sqrt(252)
            assert f[f"{sym}.vol_{n}d"].value == pytest.approx(expected, rel=1e-9)
        assert f[f"{sym}.vol_full"].value == pytest.approx(statistics.stdev(r) * math.sqrt(252))
        assert f[f"{sym}.max_drawdown"].value == pytest.approx(ref_max_drawdown(c), abs=1e-12)
        assert f[f"{sym}.drawdown_now"].value == pytest.approx(c[-1] / max(c) - 1, abs=1e-12)
        for w in (20, 50, 200):
            assert f[f"{sym}.sma_{w}"].value == pytest.approx(statistics.fmean(c[-w:]), rel=1e-12)
        assert f[f"{sym}.rsi_14"].value == pytest.approx(ref_rsi(c), rel=1e-9)

    def test_correlation_of_daily_returns(self) -> None:
        a = ref_returns(closes_of(self.data, "ACME"))
        b = ref_returns(closes_of(self.data, "BOLT"))
        assert self.facts["corr.ACME.BOLT"].value == pytest.approx(ref_corr(a, b), rel=1e-9)

    def test_ytd_return_uses_the_previous_years_last_close(self) -> None:
        frame = self.data.frames["ACME"]
        last_2025 = float(frame[frame.index.year == 2025]["close"].iloc[-1])
        expected = float(frame["close"].iloc[-1]) / last_2025 - 1
        assert self.facts["ACME.return_ytd"].value == pytest.approx(expected, abs=1e-12)

    def test_volume_anomalies_against_a_loop(self) -> None:
        vols = [float(v) for v in self.data.frames["ACME"]["volume"]]
        days = list(self.data.frames["ACME"].index)
        hits = [
            days[i]
            for i in range(20, len(vols))
            if vols[i] > statistics.fmean(vols[i - 20 : i]) + 2 * statistics.stdev(vols[i - 20 : i])
        ]
        assert self.facts["ACME.volume_anomalies"].value == len(hits) > 0
        assert self.facts["ACME.volume_anomaly_last"].display == hits[-1].date().isoformat()

    def test_every_fact_names_a_written_convention_and_displays_its_value(self) -> None:
        for f in self.facts.values():
            assert f.convention in CONVENTIONS
            if f.unit == "percent":
                assert f.display == f"{f.value * 100:.2f}%"


class TestKnownAnswers:
    def test_a_drawdown_of_exactly_25_percent_with_its_dates(self) -> None:
        f = by_key(parse_csv(rows([100, 120, 110, 90, 95, 130])))
        assert f["T.max_drawdown"].value == pytest.approx(-0.25)
        assert f["T.max_drawdown"].display == "-25.00%"
        assert f["T.max_drawdown_peak"].display == "2026-01-02"
        assert f["T.max_drawdown_trough"].display == "2026-01-04"
        assert f["T.drawdown_now"].display == "0.00%"
        assert f["T.return_5d"].display == "30.00%"

    def test_rsi_is_100_when_prices_only_rise_and_windows_too_long_are_absent(self) -> None:
        f = by_key(parse_csv(rows([float(100 + i) for i in range(30)])))
        assert f["T.rsi_14"].value == 100.0
        assert "T.sma_20" in f and "T.sma_50" not in f and "T.return_63d" not in f

    def test_a_golden_cross_is_dated_on_the_day_the_fast_average_crosses_above(self) -> None:
        closes = [100.0] * 50 + [90.0] * 30 + [120.0] * 40
        data = parse_csv(rows(closes))
        c = closes_of(data, "T")

        def sma(i: int, w: int) -> float:
            return statistics.fmean(c[i - w + 1 : i + 1])

        above = [sma(i, 20) > sma(i, 50) for i in range(49, len(c))]
        flip = max(i for i in range(1, len(above)) if above[i] != above[i - 1]) + 49
        fact = by_key(data)["T.cross_20_50"]
        assert above[-1] and "golden" in fact.label
        assert fact.display == (dt.date(2026, 1, 1) + dt.timedelta(days=flip)).isoformat()

    def test_a_single_spike_is_one_volume_anomaly(self) -> None:
        vols = [1000.0 + (i % 3) for i in range(25)] + [5000.0] + [1001.0] * 4
        f = by_key(parse_csv(rows([100.0 + i for i in range(30)], vols)))
        assert f["T.volume_anomalies"].display == "1"
        assert f["T.volume_anomaly_last"].display == "2026-01-26"
