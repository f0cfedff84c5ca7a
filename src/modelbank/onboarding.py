"""Adding a model to the catalog in one step: the catalog entry, its first price version
(explicit, or from provider cost and markups) and its earnings rule (DESIGN §4, §7).

Used by the HTTP API and the CLI; everything happens in the caller's transaction, so a
model never exists without its price.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.catalog.genai import genai_cost
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.pricing import service as pricing
from modelbank.pricing.errors import InvalidPrice
from modelbank.pricing.formulas import Rates
from modelbank.replay import cost_rates
from modelbank.users import service as users


@dataclass(frozen=True, slots=True)
class ModelSetup:
    """A model to add: catalog fields, an explicit µcr price or a µUSD provider cost (when
    both are None the cost is looked up in genai-prices by ``provider_model_ref``), and an
    earnings rule (None: the DESIGN §7 defaults apply to models with a creator)."""

    model: catalog.NewModel
    explicit_ucr: Rates | None = None
    cost_uusd: Rates | None = None
    rule: EarningsRule | None = None


@dataclass(frozen=True, slots=True)
class ModelSetupResult:
    """The created model, its price in force and its rule (None when it has no creator and
    no rule was given)."""

    model: catalog.ModelInfo
    price: pricing.PriceInfo
    rule: EarningsRule | None


def add_model(
    session: Session, setup: ModelSetup, *, markups: pricing.Markups | None = None
) -> ModelSetupResult:
    """Create the model, price it and store its rule.

    Raises :class:`~modelbank.catalog.errors.ModelExists`,
    :class:`~modelbank.errors.InvalidInput`, :class:`~modelbank.users.errors.UserNotFound`
    (unknown creator), :class:`InvalidPrice` (no explicit price and no provider cost known).
    """
    spec = setup.model
    if spec.creator_id is not None:
        users.get_user(session, spec.creator_id)
    cost = setup.cost_uusd
    if cost is None:
        found = genai_cost(spec.provider_model_ref or spec.slug, spec.provider or None)
        if found is None and setup.explicit_ucr is None:
            raise InvalidPrice(
                f"no provider cost known for {spec.provider_model_ref or spec.slug!r}:"
                " give an explicit price or a cost",
                model=spec.slug,
            )
        cost = cost_rates(found)
    info = catalog.create_model(session, spec)
    price = pricing.set_price(
        session,
        info.id,
        tier=info.tier,
        demand=info.demand,
        cost_uusd=cost,
        explicit_ucr=setup.explicit_ucr,
        markups=markups,
        reason="created",
    )
    rule = setup.rule
    if rule is not None:
        rule = earnings.set_rule(session, info.id, rule)
    elif info.creator_id is not None:
        rule = earnings.set_rule(session, info.id, EarningsRule())
    return ModelSetupResult(info, price, rule)


def reprice(
    session: Session,
    model_id: int,
    explicit_ucr: Rates,
    *,
    markups: pricing.Markups | None = None,
    reason: str = "edited",
) -> pricing.PriceInfo:
    """A new price version with an explicit µcr price; the provider cost of the version in
    force is carried over so margins stay reported. Raises
    :class:`~modelbank.catalog.errors.ModelNotFound`."""
    info = catalog.get_model(session, model_id)
    previous = pricing.current_prices(session, [model_id]).get(model_id)
    return pricing.set_price(
        session,
        model_id,
        tier=info.tier,
        demand=info.demand,
        cost_uusd=previous.cost_uusd if previous else Rates(),
        explicit_ucr=explicit_ucr,
        markups=markups,
        reason=reason,
    )
