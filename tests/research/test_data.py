"""Market data in: every malformed file is refused with a message that names the problem."""

from __future__ import annotations

import datetime as dt

import pytest

from tallygate.research.data import SAMPLES, MarketDataError, load_sample, merge, parse_csv

GOOD = "date,symbol,open,high,low,close,volume\n2026-01-02,ACME,10,11,9,10.5,100\n2026-01-05,ACME,10.5,12,10,11,120\n"


def refused(data: str | bytes, **kw: str) -> str:
    with pytest.raises(MarketDataError) as caught:
        parse_csv(data, **kw)
    assert caught.value.status == 400 and caught.value.code == "invalid_market_data"
    return caught.value.message


class TestParsing:
    def test_a_good_file_gives_one_frame_per_symbol_in_date_order(self) -> None:
        text = GOOD + "2026-01-01,BOLT,5,5,5,5,1\n2025-12-31,BOLT,4,4,4,4,1\n"
        data = parse_csv(text.encode())
        assert data.symbols() == ["ACME", "BOLT"]
        (acme, bolt) = data.coverage()
        assert (bolt.first, bolt.last, bolt.rows) == (dt.date(2025, 12, 31), dt.date(2026, 1, 1), 2)
        assert list(data.frames["ACME"]["close"]) == [10.5, 11.0]

    def test_header_case_and_a_file_without_a_symbol_column(self) -> None:
        text = "Date,Open,High,Low,Close,Volume\n2026-01-02,1,1,1,1,5\n2026-01-03,2,2,2,2,5\n"
        assert parse_csv(text, symbol="xyz").symbols() == ["XYZ"]

    def test_several_files_merge_but_one_symbol_in_two_files_is_refused(self) -> None:
        other = GOOD.replace("ACME", "BOLT")
        assert merge(parse_csv(GOOD), parse_csv(other)).symbols() == ["ACME", "BOLT"]
        with pytest.raises(MarketDataError, match="ACME appears in more than one file"):
            merge(parse_csv(GOOD), parse_csv(GOOD))

    def test_the_shipped_sample_loads(self) -> None:
        assert "two-tickers" in SAMPLES
        data = load_sample("two-tickers")
        assert data.symbols() == ["ACME", "BOLT"] and all(c.rows > 252 for c in data.coverage())


class TestRefusals:
    def test_missing_columns_are_named(self) -> None:
        message = refused("date,symbol,open,close\n2026-01-02,A,1,1\n")
        assert "missing columns: high, low, volume" in message

    def test_a_bad_date_names_its_row_and_value(self) -> None:
        message = refused(GOOD + "02/01/2026,ACME,1,1,1,1,1\n")
        assert "row 4" in message and "'02/01/2026'" in message and "YYYY-MM-DD" in message

    def test_a_non_numeric_price_names_its_row_and_column(self) -> None:
        message = refused(GOOD.replace("10.5,100", "ten,100"))
        assert message == "row 2: close 'ten' is not a number"

    def test_one_row_is_not_enough(self) -> None:
        message = refused("date,symbol,open,high,low,close,volume\n2026-01-02,A,1,1,1,1,1\n")
        assert "A has only 1 row" in message and "at least 2" in message

    def test_empty_files_header_only_and_duplicates(self) -> None:
        assert refused("") == "the file is empty"
        assert "no rows" in refused("date,symbol,open,high,low,close,volume\n")
        assert "ACME has the date 2026-01-05 twice" in refused(GOOD + "2026-01-05,ACME,1,1,1,1,1\n")

    def test_prices_must_be_positive_and_high_low_consistent(self) -> None:
        assert "open must be above zero" in refused(GOOD + "2026-01-06,ACME,0,1,1,1,1\n")
        assert "do not contain open and close" in refused(GOOD + "2026-01-06,ACME,5,4,3,5,1\n")

    def test_wrong_encoding_and_short_rows(self) -> None:
        assert "not UTF-8" in refused(b"date,symbol,open,high,low,close,volume\n" + b"\xff\xfe")
        assert "row 3: 3 values" in refused(
            GOOD.replace("2026-01-05,ACME,10.5,12,10,11,120", "2026-01-05,ACME,1")
        )
