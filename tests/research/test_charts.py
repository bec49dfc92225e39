"""Charts are valid, self-contained SVG with the series they name."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tallygate.research.charts import charts
from tallygate.research.data import load_sample

SVG = "{http://www.w3.org/2000/svg}"


def test_three_charts_per_symbol_with_their_series_titles_and_no_external_reference() -> None:
    data = load_sample("two-tickers")
    drawn = charts(data)
    assert sorted(drawn) == [
        f"{k}:{s}" for k in ("drawdown", "price", "volatility") for s in ("ACME", "BOLT")
    ]
    for name, svg in drawn.items():
        root = ET.fromstring(svg)
        assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}desc") is not None
        assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', ""), name
        series = [p.get("data-series") for p in root.iter(f"{SVG}polyline")]
        expected = {
            "price": ["close", "MA20", "MA50"],
            "drawdown": ["drawdown"],
            "volatility": ["volatility"],
        }
        assert series == expected[name.split(":")[0]]
    price = ET.fromstring(drawn["price:ACME"])
    close = next(p for p in price.iter(f"{SVG}polyline") if p.get("data-series") == "close")
    assert len(close.get("points", "").split()) == len(data.frames["ACME"])
    assert charts(data) == drawn  # deterministic
