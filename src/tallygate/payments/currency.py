"""Payment amounts: minor units of an ISO 4217 currency, and the one conversion to nano-units.

credited = floor(paid_minor × 10^(9 − exponent) × rate), with the rate an exact decimal; never a
float (DESIGN.md "top-up order")."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from tallygate.errors import BadRequest

# ISO 4217 minor-unit exponents that differ from 2.
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW MGA PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
EXPONENTS: dict[str, int] = {c: 0 for c in _ZERO.split()} | {c: 3 for c in _THREE.split()}


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency.upper(), 2)


def parse_rate(text: str, *, field: str = "rate") -> Fraction:
    """An exact positive decimal (bucket units per payment-currency unit)."""
    try:
        value = Decimal(str(text))
    except (InvalidOperation, ValueError):
        raise BadRequest(f"{field} is not a decimal: {text!r}", param=field) from None
    if not value.is_finite() or value < 0:
        raise BadRequest(f"{field} must be a non-negative decimal", param=field)
    return Fraction(value)


def to_minor(text: str, currency: str, *, field: str = "amount") -> int:
    """ "12.34" USD → 1234; refuses floats and more decimals than the currency has."""
    if isinstance(text, float | bool):
        raise BadRequest(f"{field} must be a decimal string, not a float", param=field)
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise BadRequest(f"{field} is not a number: {text!r}", param=field) from None
    if not value.is_finite() or value <= 0:
        raise BadRequest(f"{field} must be a positive amount", param=field)
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise BadRequest(
            f"{field} has more decimals than {currency.upper()} allows ({exponent(currency)})",
            param=field,
        )
    return int(scaled)


def minor_to_text(minor: int, currency: str) -> str:
    exp = exponent(currency)
    if exp == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"


def factor(rate: str, bonus_rate: str) -> Fraction:
    """The order's snapshotted conversion: rate × (1 + bonus)."""
    return parse_rate(rate) * (1 + parse_rate(bonus_rate, field="bonus_rate"))


def to_nanos(minor: int, currency: str, rate: Fraction) -> int:
    """floor(minor × 10^(9 − exponent) × rate): nano-units of the bucket's currency."""
    return int(math.floor(Fraction(minor) * 10 ** (9 - exponent(currency)) * rate))
