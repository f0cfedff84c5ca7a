"""Small builders for tests: users, priced models and funded wallets."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.tiers import Tier
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.users import service as users
from modelbank.wallets import service as wallets

GPT4O_COST = Rates(
    input_per_mtok=Decimal(2_500_000),
    output_per_mtok=Decimal(10_000_000),
    cache_read_per_mtok=Decimal(1_250_000),
)
"""gpt-4o's provider cost in µUSD per 1M tokens ($2.50 / $10 / $1.25)."""


def user(session: Session, name: str, *, credits_ucr: int = 0) -> int:
    info = users.create_user(session, name, name.title())
    if credits_ucr:
        wallets.grant(session, info.id, credits_ucr, idempotency_key=f"seed:{name}")
    return info.id


def model(
    session: Session,
    slug: str,
    *,
    creator_id: int | None = None,
    cost: Rates = GPT4O_COST,
    tier: Tier = Tier.MEDIUM,
    explicit: Rates | None = None,
    rule: EarningsRule | None = None,
    mode: Mode = Mode.CHAT,
) -> int:
    info = catalog.create_model(
        session,
        catalog.NewModel(
            slug=slug, name=slug, provider="openai", mode=mode, tier=tier, creator_id=creator_id
        ),
    )
    pricing.set_price(session, info.id, tier=tier, cost_uusd=cost, explicit_ucr=explicit)
    if rule is not None:
        earnings.set_rule(session, info.id, rule)
    return info.id
