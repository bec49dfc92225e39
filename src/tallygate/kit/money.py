"""Money: integer nano-units (10^-9 of a currency unit). The one place that parses, formats
and rounds. No float ever enters here: parsing goes through ``Decimal`` and must be exact."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from tallygate.errors import BadRequest

NANOS_PER_UNIT = 1_000_000_000
MAX_NANOS = 2**63 - 1

SYMBOLS = {"USD": "$", "CNY": "¥", "EUR": "€", "GBP": "£", "JPY": "¥"}


def parse_amount(text: str | int | Decimal, *, field: str = "amount") -> int:
    """Parse a decimal amount in currency units ("12.5") into exact nano-units.

    Refuses floats, more than 9 decimals, non-finite values and anything out of range."""
    if isinstance(text, bool) or isinstance(text, float):
        raise BadRequest(f"{field} must be a decimal string, not a float", param=field)
    try:
        value = Decimal(text) if not isinstance(text, Decimal) else text
    except (InvalidOperation, ValueError):
        raise BadRequest(f"{field} is not a number: {text!r}", param=field) from None
    if not value.is_finite():
        raise BadRequest(f"{field} must be finite", param=field)
    # Exact, without context arithmetic (28-digit precision would round extra decimals away).
    sign, digit_tuple, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digits = list(digit_tuple)
    while len(digits) > 1 and digits[-1] == 0:  # trailing zeros carry no decimals
        digits.pop()
        exponent += 1
    if exponent < -9:
        raise BadRequest(f"{field} has more than 9 decimal places: {text}", param=field)
    if len(digits) + exponent > 19:
        raise BadRequest(f"{field} is out of range", param=field)
    magnitude: int = int("".join(map(str, digits)) or "0") * 10 ** (exponent + 9)
    result = -magnitude if sign else magnitude
    if abs(result) > MAX_NANOS:
        raise BadRequest(f"{field} is out of range", param=field)
    return result


def to_decimal_string(nanos: int) -> str:
    """Exact decimal string of a nano amount, without trailing zeros beyond 2 decimals."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_UNIT)
    frac_text = f"{frac:09d}".rstrip("0")
    if len(frac_text) < 2:
        frac_text = frac_text.ljust(2, "0")
    return f"{sign}{whole}.{frac_text}"


def format_money(nanos: int, currency: str, *, places: int = 2) -> str:
    """Human display: currency symbol, ``places`` decimals, half-even. Display only."""
    value = (Decimal(nanos) / NANOS_PER_UNIT).quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)
    symbol = SYMBOLS.get(currency.upper())
    return f"{symbol}{value:,}" if symbol else f"{value:,} {currency.upper()}"


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division: the one rounding rule for charges (round up, once, on the total)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    return -((-numerator) // denominator)
