"""Pure pricing math (DESIGN §4): rates, the amount of one usage, price from cost, margin.

No I/O and no rounding except where named: :func:`amount` is exact, callers round once
with :func:`modelbank.money.round_ucr` / :func:`~modelbank.money.round_uusd` when posting.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from modelbank.money import mul, per_mtok

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Rates:
    """A rate card in one unit: µcr for prices (``price_ucr``), µUSD for costs (``cost_uusd``).

    ``*_per_mtok`` per 1,000,000 tokens; ``per_request`` per call; ``per_unit`` per image or
    per second of video/audio. ``cache_read_per_mtok`` None: cached input is billed as input.
    """

    input_per_mtok: Decimal = ZERO
    output_per_mtok: Decimal = ZERO
    cache_read_per_mtok: Decimal | None = None
    per_request: Decimal = ZERO
    per_unit: Decimal = ZERO

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok", "per_request", "per_unit"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite Decimal ≥ 0, got {value!r}")
        cache = self.cache_read_per_mtok
        if cache is not None and (
            not isinstance(cache, Decimal) or not cache.is_finite() or cache < 0
        ):
            raise ValueError(f"cache_read_per_mtok must be a finite Decimal ≥ 0, got {cache!r}")

    def scaled(self, factor: Decimal) -> Rates:
        """Every rate multiplied by ``factor`` exactly."""
        return Rates(
            input_per_mtok=mul(self.input_per_mtok, factor),
            output_per_mtok=mul(self.output_per_mtok, factor),
            cache_read_per_mtok=None
            if self.cache_read_per_mtok is None
            else mul(self.cache_read_per_mtok, factor),
            per_request=mul(self.per_request, factor),
            per_unit=mul(self.per_unit, factor),
        )


@dataclass(frozen=True, slots=True)
class Quantities:
    """What one usage event consumed: tokens (input includes cached), units, requests."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    units: int = 0
    requests: int = 1


def amount(rates: Rates, q: Quantities) -> Decimal:
    """Exact amount of ``q`` at ``rates`` (unit of the rates), unrounded.

    ``(input − cached) × input_rate/1M + cached × cache_rate/1M + output × output_rate/1M
    + requests × per_request + units × per_unit``; cached tokens use the input rate when the
    card has no cache-read rate.
    """
    cache_rate = (
        rates.input_per_mtok if rates.cache_read_per_mtok is None else rates.cache_read_per_mtok
    )
    total = per_mtok(q.input_tokens - q.cached_input_tokens, rates.input_per_mtok)
    if q.cached_input_tokens:
        total += per_mtok(q.cached_input_tokens, cache_rate)
    total += per_mtok(q.output_tokens, rates.output_per_mtok)
    if q.requests:
        total += mul(q.requests, rates.per_request)
    if q.units:
        total += mul(q.units, rates.per_unit)
    return total


def price_from_cost(
    cost_uusd: Rates, *, tier_markup: Decimal, demand_markup: Decimal, credits_per_usd: Decimal
) -> Rates:
    """DESIGN §4: price = provider cost × tier markup × demand × credits-per-USD.

    ``cost_uusd`` is in µUSD, the result in µcr (1 µUSD × credits_per_usd = µcr, since both
    units are millionths). Exact.
    """
    return cost_uusd.scaled(mul(tier_markup, demand_markup, credits_per_usd))


def margin_bps(charge_ucr: int, cost_ucr: Decimal | int) -> int | None:
    """DESIGN §4: margin = (price − cost) / price, in basis points (half-even); None at price 0."""
    if charge_ucr == 0:
        return None
    from modelbank.money import round_half_even

    return round_half_even((Decimal(charge_ucr) - Decimal(cost_ucr)) * 10_000 / Decimal(charge_ucr))
