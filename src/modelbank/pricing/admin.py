"""The admin pricing panel: every model's cost, price, markup and margin, and recalculation
of prices from provider costs (DESIGN §4).

Margin is :mod:`modelbank.pricing.ratecard`'s one definition (charge − provider cost in µcr
− creator earnings), quoted by the same rate card the charge path runs, on a reference usage
of 1,000,000 input tokens, 1,000,000 output tokens, one request and one unit, before
creator earnings (they depend on who uses the model), in basis points of the charge
(half-even), so that token and per-operation models compare.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session

from modelbank.catalog.service import ModelInfo
from modelbank.money import mul
from modelbank.pricing.formulas import Quantities, amount, price_from_cost
from modelbank.pricing.markups import Demand
from modelbank.pricing.ratecard import margin_bps, rate_card
from modelbank.pricing.service import Markups, PriceInfo, current_prices, set_price

REFERENCE_EVENT = Quantities(
    input_tokens=1_000_000, output_tokens=1_000_000, cached_input_tokens=0, units=1, requests=1
)
"""The event margins are computed on."""


@dataclass(frozen=True, slots=True)
class PricingRow:
    """One model in the pricing panel; ``price`` None when it has no price in force.
    ``markup`` = tier markup × demand markup of the version in force; ``margin_bps`` on the
    reference event (None at a zero price)."""

    model: ModelInfo
    price: PriceInfo | None
    markup: Decimal | None
    margin_bps: int | None


def reference_margin_bps(price: PriceInfo) -> int | None:
    """Margin of ``price`` on :data:`REFERENCE_EVENT` before creator earnings, in basis
    points of the charge; None at a zero charge."""
    quote = rate_card(price).quote(REFERENCE_EVENT)
    return margin_bps(quote.charge_ucr, quote.margin_ucr(earnings_ucr=0))


def pricing_rows(session: Session, models: Iterable[ModelInfo]) -> list[PricingRow]:
    """The pricing panel rows of ``models``, in the order given."""
    listed = list(models)
    prices = current_prices(session, [m.id for m in listed])
    rows = []
    for model in listed:
        price = prices.get(model.id)
        rows.append(
            PricingRow(
                model=model,
                price=price,
                markup=None if price is None else mul(price.tier_markup, price.demand_markup),
                margin_bps=None if price is None else reference_margin_bps(price),
            )
        )
    return rows


@dataclass
class Recalculation:
    """Outcome of :func:`recalculate`: models that got a new price version, models whose
    price was already what the cost and markups give, and models skipped with the reason
    (``explicit_price``: an admin set the price by hand; ``no_price``: nothing to start
    from; ``no_cost``: the provider cost is zero)."""

    updated: list[PriceInfo] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)


def recalculate(
    session: Session,
    models: Iterable[ModelInfo],
    *,
    markups: Markups | None = None,
    include_explicit: bool = False,
    reason: str = "recalculated from provider cost",
) -> Recalculation:
    """Reprice ``models`` from the provider cost stored with their price in force, their
    current tier and demand and ``markups`` (DESIGN §4 formula). A model whose price would
    not change gets no new version. Explicit prices are kept unless ``include_explicit``."""
    markups = markups or Markups()
    listed = list(models)
    prices = current_prices(session, [m.id for m in listed])
    result = Recalculation()
    for model in listed:
        price = prices.get(model.id)
        if price is None:
            result.skipped[model.id] = "no_price"
            continue
        if price.source == "explicit" and not include_explicit:
            result.skipped[model.id] = "explicit_price"
            continue
        if amount(price.cost_uusd, REFERENCE_EVENT) == 0:
            result.skipped[model.id] = "no_cost"
            continue
        demand = Demand(model.demand)
        target = price_from_cost(
            price.cost_uusd,
            tier_markup=markups.tiers[model.tier],
            demand_markup=markups.demand[demand],
            credits_per_usd=markups.credits_per_usd,
        )
        if target == price.price_ucr and price.source == "cost" and price.tier == model.tier:
            result.unchanged.append(model.id)
            continue
        result.updated.append(
            set_price(
                session,
                model.id,
                tier=model.tier,
                demand=demand,
                cost_uusd=price.cost_uusd,
                markups=markups,
                reason=reason,
            )
        )
    return result
