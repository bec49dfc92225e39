"""Money is exact: integer nano-units in, integer nano-units out, one rounding rule (up)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallygate.errors import BadRequest
from tallygate.kit.money import MAX_NANOS, NANOS_PER_UNIT, ceil_div, parse_amount, to_decimal_string

nanos = st.integers(min_value=-MAX_NANOS, max_value=MAX_NANOS)


class TestParseAmount:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("1", 1_000_000_000),
            ("0.000000001", 1),
            ("12.5", 12_500_000_000),
            ("0.15", 150_000_000),
            ("-2.25", -2_250_000_000),
            ("1.500000000", 1_500_000_000),
            ("1E+2", 100_000_000_000),
            (Decimal("0.000000150"), 150),
            (3, 3_000_000_000),
            ("9223372036.854775807", MAX_NANOS),
        ],
    )
    def test_decimal_text_becomes_exact_nanos(
        self, text: str | int | Decimal, expected: int
    ) -> None:
        result = parse_amount(text)

        assert result == expected
        assert type(result) is int

    @pytest.mark.parametrize("value", [0.1, 1.0, 1e-9, True, False])
    def test_floats_and_bools_are_refused(self, value: object) -> None:
        with pytest.raises(BadRequest, match="not a float"):
            parse_amount(value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("text", ["0.0000000001", "1.1234567891", "-0.0000000005"])
    def test_more_than_nine_decimals_are_refused(self, text: str) -> None:
        with pytest.raises(BadRequest, match="more than 9 decimal places"):
            parse_amount(text)

    @pytest.mark.parametrize(
        "text",
        [
            # 28 decimals on a whole number: the product with 10^9 has 29 significant digits,
            # more than Decimal's default precision, so a careless multiply rounds the excess
            # decimals away and accepts the amount.
            "1.0000000000000000000000000001",
            "5.0000000000000000000000000000007",
        ],
    )
    def test_more_than_nine_decimals_are_refused_beyond_decimal_precision(self, text: str) -> None:
        with pytest.raises(BadRequest, match="more than 9 decimal places"):
            parse_amount(text)

    @pytest.mark.parametrize("text", ["NaN", "sNaN", "Infinity", "-inf", Decimal("NaN")])
    def test_non_finite_values_are_refused(self, text: str | Decimal) -> None:
        with pytest.raises(BadRequest, match="must be finite"):
            parse_amount(text)

    @pytest.mark.parametrize("text", ["", "abc", "1,5", "0x10"])
    def test_text_that_is_not_a_number_is_refused(self, text: str) -> None:
        with pytest.raises(BadRequest, match="not a number"):
            parse_amount(text)

    @pytest.mark.parametrize("text", ["9223372036.854775808", "-9223372036.854775808", "1E+30"])
    def test_amounts_beyond_64_bits_of_nanos_are_refused(self, text: str) -> None:
        with pytest.raises(BadRequest, match="out of range"):
            parse_amount(text)

    @pytest.mark.parametrize("text", ["1E+999999", "-1E+999999"])
    def test_huge_exponents_are_refused_as_bad_requests(self, text: str) -> None:
        with pytest.raises(BadRequest, match="out of range"):
            parse_amount(text)

    def test_the_refused_field_is_named(self) -> None:
        with pytest.raises(BadRequest) as refused:
            parse_amount("1.5.5", field="price_in")

        assert refused.value.param == "price_in"
        assert "price_in" in refused.value.message

    @given(
        whole=st.integers(min_value=0, max_value=MAX_NANOS // NANOS_PER_UNIT - 1),
        frac=st.integers(min_value=0, max_value=NANOS_PER_UNIT - 1),
        places=st.integers(min_value=0, max_value=9),
        negative=st.booleans(),
    )
    def test_any_amount_with_at_most_nine_decimals_is_exact(
        self, whole: int, frac: int, places: int, negative: bool
    ) -> None:
        frac -= frac % 10 ** (9 - places)  # keep `places` significant decimals
        digits = f"{frac:09d}"[:places]
        text = f"{'-' if negative else ''}{whole}{'.' + digits if places else ''}"

        expected = (whole * NANOS_PER_UNIT + frac) * (-1 if negative else 1)
        assert parse_amount(text) == expected


class TestToDecimalString:
    @pytest.mark.parametrize(
        ("amount", "text"),
        [
            (0, "0.00"),
            (1, "0.000000001"),
            (1_500_000_000, "1.50"),
            (12_345_000_000, "12.345"),
            (-1, "-0.000000001"),
            (-2_000_000_000, "-2.00"),
            (MAX_NANOS, "9223372036.854775807"),
        ],
    )
    def test_prints_the_exact_amount(self, amount: int, text: str) -> None:
        assert to_decimal_string(amount) == text

    @given(amount=nanos)
    def test_round_trips_through_parse_amount(self, amount: int) -> None:
        assert parse_amount(to_decimal_string(amount)) == amount


class TestCeilDiv:
    @pytest.mark.parametrize(
        ("numerator", "denominator", "expected"),
        [(0, 7, 0), (1, 1_000_000, 1), (1_000_000, 1_000_000, 1), (1_000_001, 1_000_000, 2)],
    )
    def test_rounds_up_to_a_whole_nano(
        self, numerator: int, denominator: int, expected: int
    ) -> None:
        assert ceil_div(numerator, denominator) == expected

    @pytest.mark.parametrize("denominator", [0, -1])
    def test_refuses_a_non_positive_denominator(self, denominator: int) -> None:
        with pytest.raises(ValueError, match="positive"):
            ceil_div(10, denominator)

    @given(
        numerator=st.integers(min_value=-(10**30), max_value=10**30),
        denominator=st.integers(min_value=1, max_value=10**12),
    )
    def test_is_the_exact_ceiling_of_the_rational(self, numerator: int, denominator: int) -> None:
        exact = Fraction(numerator, denominator)
        result = ceil_div(numerator, denominator)

        assert type(result) is int
        assert result - 1 < exact <= result

    @given(
        usage=st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=2_000_000),  # tokens
                st.integers(min_value=1, max_value=100_000_000_000),  # nanos per 1M tokens
            ),
            min_size=1,
            max_size=50,
        )
    )
    def test_rounding_each_charge_up_overcollects_by_less_than_one_nano_each(
        self, usage: list[tuple[int, int]]
    ) -> None:
        """T5: 0 ≤ Σ round_up(exact_i) − Σ exact_i < n nano-units."""
        exact = sum(Fraction(tokens * price, 1_000_000) for tokens, price in usage)
        charged = sum(ceil_div(tokens * price, 1_000_000) for tokens, price in usage)

        assert 0 <= charged - exact < len(usage)
