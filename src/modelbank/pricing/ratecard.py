"""The rate card: what a usage costs the user, what it costs the platform, and the margin
between them, in integers (DESIGN §4, §13 "price, provider cost and margin of a usage").

This is the code every charge runs. A :class:`RateCard` is a price version turned into
integer numerators over one denominator, so a charge is a handful of integer products and
one half-even division (:func:`~modelbank.money.div_half_even`), with no ``Decimal`` on the
hot path. The ``Decimal`` formulas of :mod:`modelbank.pricing.formulas` stay as the oracle:
``tests/pricing/test_ratecard.py`` proves over random cards and usages that

* ``quote(u).charge_ucr == round_ucr(amount(price_ucr, u))``,
* ``quote(u).cost_uusd == round_uusd(amount(cost_uusd, u))``,
* ``quote(u).cost_ucr == round_ucr(amount(cost_uusd, u) × credits_per_usd)``.

**Margin** (one definition, used by usage rows, the admin pricing panel and analytics):
``margin_ucr = charge_ucr − cost_ucr − earnings_ucr``, what the platform keeps of a charge
after the provider's cost (converted to µcr at the version's credits-per-USD, rounded once)
and the creators' earnings. The admin panel shows it on a reference usage with no
earnings (``gross``; a model's earnings depend on who uses it), usage rows with the
earnings paid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from modelbank.money import TOKENS_PER_MTOK, div_half_even, round_half_even
from modelbank.pricing.formulas import Quantities, Rates
from modelbank.pricing.service import PriceInfo

BPS = 10_000
"""Basis points in a whole (margins are reported in bps)."""


@dataclass(frozen=True, slots=True)
class Card:
    """One :class:`~modelbank.pricing.formulas.Rates` as integers over one denominator.

    The exact amount of a usage, in the rates' unit, is
    ``(fresh × fresh_rate + cached × cached_rate + output × output_rate + request
    + units × unit_rate) / den`` (one request per usage; fresh = input − cached), exactly
    :func:`~modelbank.pricing.formulas.amount`.
    """

    fresh: int
    cached: int
    output: int
    request: int
    unit: int
    den: int

    @staticmethod
    def of(rates: Rates) -> Card:
        """The integer card of ``rates`` (exact: Decimals are integer ratios)."""
        cache_rate = (
            rates.input_per_mtok if rates.cache_read_per_mtok is None else rates.cache_read_per_mtok
        )
        parts = [
            _per_token(rates.input_per_mtok),
            _per_token(cache_rate),
            _per_token(rates.output_per_mtok),
            rates.per_request.as_integer_ratio(),
            rates.per_unit.as_integer_ratio(),
        ]
        den = math.lcm(*(d for _, d in parts))
        fresh, cached, output, request, unit = (n * (den // d) for n, d in parts)
        return Card(fresh, cached, output, request, unit, den)

    def numerator(self, fresh: int, cached: int, output: int, units: int) -> int:
        """The exact amount × :attr:`den` of one usage (tokens and units ≥ 0)."""
        return (
            fresh * self.fresh
            + cached * self.cached
            + output * self.output
            + self.request
            + units * self.unit
        )


def _per_token(rate_per_mtok: Decimal) -> tuple[int, int]:
    numerator, denominator = rate_per_mtok.as_integer_ratio()
    return numerator, denominator * TOKENS_PER_MTOK


@dataclass(frozen=True, slots=True)
class Quote:
    """A usage priced: ``charge_ucr`` (µcr the user pays), ``cost_uusd`` (µUSD the provider
    charges), ``cost_ucr`` (that cost in µcr at the version's credits per USD) and
    ``gross_margin_ucr`` = charge − cost_ucr (before creator earnings)."""

    charge_ucr: int
    cost_uusd: int
    cost_ucr: int

    @property
    def gross_margin_ucr(self) -> int:
        """``charge_ucr − cost_ucr`` (µcr)."""
        return self.charge_ucr - self.cost_ucr

    def margin_ucr(self, earnings_ucr: int) -> int:
        """What the platform keeps: :func:`margin_ucr` of this quote (µcr)."""
        return margin_ucr(self.charge_ucr, self.cost_ucr, earnings_ucr)


def margin_ucr(charge_ucr: int, cost_ucr: int, earnings_ucr: int) -> int:
    """DESIGN §4 margin in µcr: charge − provider cost (µcr) − creator earnings. May be
    negative (a model sold below cost, or earnings above the spread)."""
    return charge_ucr - cost_ucr - earnings_ucr


def margin_bps(charge_ucr: int, margin: int) -> int | None:
    """``margin / charge`` in basis points, half-even; None at a zero charge."""
    if charge_ucr == 0:
        return None
    return round_half_even(Decimal(margin * BPS) / Decimal(charge_ucr))


@dataclass(frozen=True, slots=True)
class RateCard:
    """A price version ready to price usages: its charge card (µcr), cost card (µUSD) and
    credits per USD as an integer ratio. Build with :func:`rate_card` (cached: versions are
    immutable)."""

    info: PriceInfo
    charge: Card
    cost: Card
    cpu_num: int
    cpu_den: int

    @property
    def version_id(self) -> int:
        """The price version's id (recorded on every usage row)."""
        return self.info.id

    def charge_ucr(self, fresh: int, cached: int, output: int, units: int) -> int:
        """µcr charged for a usage of ``fresh`` + ``cached`` input tokens, ``output`` tokens
        and ``units`` (one request), rounded half-even once."""
        card = self.charge
        return div_half_even(card.numerator(fresh, cached, output, units), card.den)

    def quote(
        self, q: Quantities | None = None, *, fixed_charge_ucr: int | None = None, **counts: int
    ) -> Quote:
        """Price one usage (``q``, or ``input_tokens=…, output_tokens=…,
        cached_input_tokens=…, units=…``). ``fixed_charge_ucr`` replaces the charge (a hold
        captured for an agreed amount); the cost is always the card's. Requests other than 1
        are not supported (a usage event is one request)."""
        if q is None:
            q = Quantities(**counts)
        assert q.requests == 1, "a usage event is one request"
        return self.quote_counts(
            q.input_tokens - q.cached_input_tokens,
            q.cached_input_tokens,
            q.output_tokens,
            q.units,
            fixed_charge_ucr=fixed_charge_ucr,
        )

    def quote_counts(
        self,
        fresh: int,
        cached: int,
        output: int,
        units: int,
        *,
        fixed_charge_ucr: int | None = None,
    ) -> Quote:
        """:meth:`quote` for counts already split (the charge path's form)."""
        charge = (
            self.charge_ucr(fresh, cached, output, units)
            if fixed_charge_ucr is None
            else fixed_charge_ucr
        )
        cost = self.cost
        cost_num = cost.numerator(fresh, cached, output, units)
        return Quote(
            charge_ucr=charge,
            cost_uusd=div_half_even(cost_num, cost.den),
            cost_ucr=div_half_even(cost_num * self.cpu_num, cost.den * self.cpu_den),
        )


_CARDS: dict[PriceInfo, RateCard] = {}
_CARDS_SIZE = 4096
"""Price version → its rate card. Versions are immutable, keyed by content."""


def rate_card(info: PriceInfo) -> RateCard:
    """The :class:`RateCard` of a price version (built once per process per version)."""
    found = _CARDS.get(info)
    if found is None:
        if len(_CARDS) >= _CARDS_SIZE:
            _CARDS.clear()
        cpu_num, cpu_den = info.credits_per_usd.as_integer_ratio()
        found = _CARDS[info] = RateCard(
            info, Card.of(info.price_ucr), Card.of(info.cost_uusd), cpu_num, cpu_den
        )
    return found
