"""Pricing suggestion for a quota listing (issue 15 §4, the "automated pricing suggestions"
wish).

For one USD of provider spend on the resource, the platform itself charges
``platform = min over served models of price(1M in + 1M out) / cost(1M in + 1M out)``
µcr (its markup × demand × credits per USD, DESIGN §4), the cheapest model being the one a
buyer compares with. The suggestion undercuts it by ``marketplace.undercut_bps`` (platform
setting, default 2,000 = 20 %) but never goes below the seller's cost basis after the
commission: ``floor = credits_per_usd × 1,000,000 / (1 − commission)`` rounded up, so that
the seller's 85 % buys back the dollar of spend they sell. Rounded half-even once.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.marketplace.orders import commission_bps
from modelbank.marketplace.records import QUOTA_PRICE_UNIT_UUSD, PriceSuggestion
from modelbank.money import DEFAULT_CREDITS_PER_USD, round_half_even
from modelbank.platform import service as platform_settings
from modelbank.pool.models import resource_models_table as served
from modelbank.pool.resources import get_resource
from modelbank.pricing import service as pricing

UNDERCUT_BPS_KEY = "marketplace.undercut_bps"
"""Platform setting: how far below the platform's own price a suggestion goes."""
DEFAULT_UNDERCUT_BPS = 2_000
BPS = 10_000


def suggest_price(
    session: Session,
    resource_id: int,
    *,
    owner_id: int | None = None,
    now: datetime | None = None,
) -> PriceSuggestion:
    """See :func:`modelbank.marketplace.service.suggest_price`."""
    now = now or utcnow()
    get_resource(session, resource_id, owner_id=owner_id, admin=owner_id is None)
    undercut = platform_settings.get(session, UNDERCUT_BPS_KEY, DEFAULT_UNDERCUT_BPS)
    undercut = min(max(undercut, 0), BPS)
    commission = commission_bps(session)
    models = list(
        session.connection()
        .execute(select(served.c.model_id).where(served.c.resource_id == resource_id))
        .scalars()
    )
    prices = pricing.current_prices(session, models, at=now)
    ratios: list[Decimal] = []
    credits_per_usd = DEFAULT_CREDITS_PER_USD
    for info in prices.values():
        cost = info.cost_uusd.input_per_mtok + info.cost_uusd.output_per_mtok
        price = info.price_ucr.input_per_mtok + info.price_ucr.output_per_mtok
        credits_per_usd = info.credits_per_usd
        if cost > 0:
            ratios.append(price / cost * QUOTA_PRICE_UNIT_UUSD)
    floor_exact = Decimal(credits_per_usd) * QUOTA_PRICE_UNIT_UUSD * BPS / max(BPS - commission, 1)
    floor = math.ceil(floor_exact)
    platform = round_half_even(min(ratios)) if ratios else None
    undercut_price = (
        None if platform is None else round_half_even(Decimal(platform) * (BPS - undercut) / BPS)
    )
    suggested = floor if undercut_price is None else max(undercut_price, floor)
    return PriceSuggestion(
        resource_id=resource_id,
        unit_price_ucr=suggested,
        platform_ucr=platform,
        floor_ucr=floor,
        undercut_bps=undercut,
        commission_bps=commission,
    )
