"""Money units, conversion, rounding and display (DESIGN §2).

Every amount that moves is an ``int``:

* :data:`MicroCredits` (µcr): 1 credit = 1,000,000 µcr. Balances, prices charged, earnings.
* :data:`MicroUSD` (µUSD): 1 USD = 1,000,000 µUSD. Provider cost, package prices, payouts.

Rates (per token, per 1M tokens, multipliers) are :class:`decimal.Decimal` and stay exact
until an amount is posted; then :func:`round_ucr` (or :func:`round_uusd`) rounds **once**,
half-even, to the integer unit. No ``float`` is accepted anywhere in this module: external
prices that arrive as JSON floats go through :func:`parse_decimal` (``Decimal(str(x))``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import NewType

MicroCredits = NewType("MicroCredits", int)
MicroUSD = NewType("MicroUSD", int)

UCR_PER_CREDIT = 1_000_000
"""µcr in one credit."""
UUSD_PER_USD = 1_000_000
"""µUSD in one US dollar."""
TOKENS_PER_MTOK = 1_000_000
"""Rates are quoted per million tokens (``*_per_mtok``)."""
DEFAULT_CREDITS_PER_USD = Decimal(100)
"""DESIGN §2: 1 USD = 100 credits by default ($10 buys 1,000 credits)."""

# 60 significant digits: a product of a token count (≤ 1e12), a rate with up to 18
# significant digits and a handful of multipliers never loses a digit before rounding.
_EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN)


class MoneyError(ValueError):
    """An amount or rate that cannot be money: a float, NaN, infinity or unparsable text."""


def parse_decimal(value: object) -> Decimal:
    """Parse an external number (JSON int/float/str, Decimal) into an exact ``Decimal``.

    Floats go through ``str`` first (DESIGN §2), so ``1.5e-07`` becomes ``Decimal('1.5E-7')``,
    not the binary expansion. Raises :class:`MoneyError` for bool, NaN, infinities and text
    that is not a number.
    """
    if isinstance(value, bool):
        raise MoneyError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | float | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise MoneyError(f"not a number: {value!r}") from exc
    else:
        raise MoneyError(f"not a number: {value!r}")
    if not result.is_finite():
        raise MoneyError(f"not a finite number: {value!r}")
    return result


def round_half_even(value: Decimal) -> int:
    """Round an exact Decimal amount to an integer, half-even: the one rounding step.

    This is the only place where a fractional amount becomes an integer unit; callers
    apply it once per posting (DESIGN §2), never to intermediate sums.
    """
    if not isinstance(value, Decimal):
        raise MoneyError(f"round_half_even expects a Decimal, got {type(value).__name__}")
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN, context=_EXACT))


def div_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half-even (``denominator`` > 0), in integers:
    exactly :func:`round_half_even` of the same rational, without building a Decimal (the
    charge path, grant cost basis, prices per credit)."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient


def round_ucr(value: Decimal) -> MicroCredits:
    """Round an exact amount in µcr to :data:`MicroCredits` (half-even, once per posting)."""
    return MicroCredits(round_half_even(value))


def round_uusd(value: Decimal) -> MicroUSD:
    """Round an exact amount in µUSD to :data:`MicroUSD` (half-even, once per posting)."""
    return MicroUSD(round_half_even(value))


def mul(*factors: Decimal | int) -> Decimal:
    """Exact product of Decimals/ints in a 60-digit context (no intermediate rounding)."""
    result = Decimal(1)
    for factor in factors:
        if isinstance(factor, float):
            raise MoneyError("float in a money product")
        result = _EXACT.multiply(result, Decimal(factor))
    return result


def per_mtok(tokens: int, rate_per_mtok: Decimal) -> Decimal:
    """Exact amount for ``tokens`` at ``rate_per_mtok`` (unit per 1M tokens), unrounded."""
    return _EXACT.divide(mul(tokens, rate_per_mtok), Decimal(TOKENS_PER_MTOK))


def uusd_to_ucr(
    amount_uusd: Decimal | int, credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD
) -> Decimal:
    """Convert µUSD to µcr exactly: 1 µUSD = ``credits_per_usd`` µcr (100 by default)."""
    return mul(amount_uusd, credits_per_usd)


def usd_to_uusd(usd: Decimal | int | str) -> MicroUSD:
    """Dollars (e.g. ``"4.99"``) to µUSD, rounded half-even once."""
    return round_uusd(mul(parse_decimal(usd), UUSD_PER_USD))


def credits_to_ucr(credits: Decimal | int | str) -> MicroCredits:
    """Credits (e.g. ``"50"`` or ``"0.01"``) to µcr, rounded half-even once."""
    return round_ucr(mul(parse_decimal(credits), UCR_PER_CREDIT))


def format_credits(amount_ucr: int, places: int = 6) -> str:
    """Display string for µcr: ``format_credits(1_234_500_000) == "1,234.500000 cr"``.

    Exact integer arithmetic; ``places`` (0–6) trims digits with half-even rounding.
    """
    return _format(amount_ucr, UCR_PER_CREDIT, places, suffix=" cr")


def format_usd(amount_uusd: int, places: int = 2) -> str:
    """Display string for µUSD: ``format_usd(4_990_000) == "$4.99"``."""
    text = _format(amount_uusd, UUSD_PER_USD, places, suffix="")
    return text.replace("-", "-$", 1) if text.startswith("-") else "$" + text


def _format(amount: int, unit: int, places: int, *, suffix: str) -> str:
    if not 0 <= places <= 6:
        raise MoneyError("places must be between 0 and 6")
    scale = 10**places
    scaled = round_half_even(Decimal(amount) * scale / unit)
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), scale)
    body = f"{whole:,}" + (f".{frac:0{places}d}" if places else "")
    return f"{sign}{body}{suffix}"
