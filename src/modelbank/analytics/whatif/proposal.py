"""A price proposal for a what-if (DESIGN §4): new provider costs from a LiteLLM price sheet,
new tier markups (``TIER=X``), new demand levels per model (``MODEL=LEVEL``), and the
proposed price version of a model they give.

The proposed price is DESIGN §4's formula, computed by the function the pricing domain
prices with (:func:`modelbank.pricing.formulas.price_from_cost`): ``cost × tier markup ×
demand markup × credits per USD``, where each factor is the proposal's when it names one and
otherwise the one stored with the price version it starts from. A version whose price an
admin set by hand (source ``explicit``) keeps its price; a sheet still changes its cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from modelbank.catalog.costs import CostImport, ProviderCost
from modelbank.catalog.service import ModelInfo
from modelbank.catalog.tiers import Tier
from modelbank.errors import InvalidInput
from modelbank.money import MoneyError, parse_decimal
from modelbank.pricing.formulas import Rates, price_from_cost
from modelbank.pricing.markups import DEMAND_MARKUPS, Demand
from modelbank.pricing.service import PriceInfo

MAX_MARKUP = Decimal(1000)
"""Largest tier markup a proposal may name (a typo guard, not a business rule)."""
PROPOSED_SOURCE = "what_if"
"""``source`` of a proposed price version (never stored)."""


class InvalidWhatIf(InvalidInput):
    """A what-if proposal that cannot be read: ``TIER=X`` with an unknown tier or a markup
    that is not a number in (0, 1000], ``MODEL=LEVEL`` with an unknown level, a model named
    twice, or a period that is empty or too long. HTTP 422; CLI exit 2."""

    code = "invalid_what_if"


class WhatIfTooLarge(InvalidInput):
    """The period holds more usage events than one what-if prices (``events``, ``limit``).
    HTTP 422: ask for a shorter period."""

    code = "what_if_too_large"


@dataclass(frozen=True, slots=True)
class Proposal:
    """What changes. ``costs``: a price sheet's provider costs (None: costs as stored);
    ``tiers``: tier → markup; ``demand``: model slug → demand level; ``demand_markups``:
    level → multiplier (DESIGN §4 defaults)."""

    costs: CostImport | None = None
    tiers: Mapping[Tier, Decimal] = field(default_factory=dict)
    demand: Mapping[str, Demand] = field(default_factory=dict)
    demand_markups: Mapping[Demand, Decimal] = field(default_factory=lambda: dict(DEMAND_MARKUPS))

    @property
    def empty(self) -> bool:
        """Nothing proposed: the proposed prices are today's."""
        return self.costs is None and not self.tiers and not self.demand

    def describe(self) -> dict[str, object]:
        """The proposal as JSON-ready values (reports echo it)."""
        return {
            "price_sheet": None if self.costs is None else self.costs.source,
            "markups": {tier.value: str(m) for tier, m in self.tiers.items()},
            "demand": {slug: level.value for slug, level in self.demand.items()},
        }


def parse_markups(items: Iterable[str]) -> dict[Tier, Decimal]:
    """``["large=1.54", "SMALL=1.7"]`` → {Tier.LARGE: 1.54, Tier.SMALL: 1.7}. Tier names are
    case-insensitive. Raises :class:`InvalidWhatIf` naming the bad item."""
    found: dict[Tier, Decimal] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            tier = Tier(name.strip().lower())
        except ValueError:
            known = ", ".join(t.value for t in Tier)
            raise InvalidWhatIf(
                f"bad markup {item!r}: expected TIER=X with TIER one of {known}", item=item
            ) from None
        try:
            markup = parse_decimal(value.strip()) if sep else None
        except MoneyError:
            markup = None
        if markup is None or not 0 < markup <= MAX_MARKUP:
            raise InvalidWhatIf(
                f"bad markup {item!r}: X must be a number > 0 and ≤ {MAX_MARKUP}", item=item
            )
        if tier in found:
            raise InvalidWhatIf(f"tier {tier.value} named twice", item=item)
        found[tier] = markup
    return found


def parse_demand(items: Iterable[str]) -> dict[str, Demand]:
    """``["gpt-4o=high"]`` → {"gpt-4o": Demand.HIGH} (level case-insensitive). Raises
    :class:`InvalidWhatIf`. Unknown models are reported by the what-if, not here (this
    does not read the catalog)."""
    found: dict[str, Demand] = {}
    for item in items:
        slug, sep, level = item.rpartition("=")
        try:
            demand = Demand(level.strip().lower())
        except ValueError:
            demand = None
        if not sep or not slug.strip() or demand is None:
            raise InvalidWhatIf(
                f"bad demand {item!r}: expected MODEL=LEVEL with LEVEL high, medium or low",
                item=item,
            )
        if slug.strip() in found:
            raise InvalidWhatIf(f"model {slug.strip()!r} named twice", item=item)
        found[slug.strip()] = demand
    return found


def sheet_cost(costs: CostImport, model: ModelInfo) -> ProviderCost | None:
    """The sheet's cost of ``model``: the key equal to its provider model name, else to its
    slug, else the first key (by name) ending in ``/<provider model name>``."""
    for key in (model.provider_model_ref, model.slug):
        if key in costs.costs:
            return costs.costs[key]
    suffix = f"/{model.provider_model_ref}"
    for key in sorted(costs.costs):
        if key.endswith(suffix):
            return costs.costs[key]
    return None


def cost_rates(cost: ProviderCost) -> Rates:
    """A provider cost as µUSD :class:`~modelbank.pricing.formulas.Rates`."""
    return Rates(
        input_per_mtok=cost.input_uusd_per_mtok,
        output_per_mtok=cost.output_uusd_per_mtok,
        cache_read_per_mtok=cost.cache_read_uusd_per_mtok,
        per_request=cost.per_request_uusd,
        per_unit=cost.per_unit_uusd or Decimal(0),
    )


def proposed_price(info: PriceInfo, model: ModelInfo, proposal: Proposal) -> PriceInfo:
    """The price version ``info`` of ``model`` as the proposal would make it (the module
    doc's rule); ``info`` itself when the proposal changes nothing of it. The result is
    never stored: its ``source`` is :data:`PROPOSED_SOURCE`."""
    cost = info.cost_uusd
    if proposal.costs is not None:
        found = sheet_cost(proposal.costs, model)
        if found is not None:
            cost = cost_rates(found)
    tier_markup = proposal.tiers.get(Tier(info.tier), info.tier_markup)
    level = proposal.demand.get(model.slug)
    demand_markup = info.demand_markup if level is None else proposal.demand_markups[level]
    if (cost, tier_markup, demand_markup) == (
        info.cost_uusd,
        info.tier_markup,
        info.demand_markup,
    ):
        return info
    price = (
        info.price_ucr
        if info.source == "explicit"
        else price_from_cost(
            cost,
            tier_markup=tier_markup,
            demand_markup=demand_markup,
            credits_per_usd=info.credits_per_usd,
        )
    )
    if price == info.price_ucr and cost == info.cost_uusd:
        return info  # an explicit price with its cost unchanged: nothing to reprice
    return replace(
        info,
        price_ucr=price,
        cost_uusd=cost,
        tier_markup=tier_markup,
        demand_markup=demand_markup,
        source=PROPOSED_SOURCE,
    )
