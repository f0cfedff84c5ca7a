"""The demo's catalog and cast (DESIGN §15): real chat models priced from provider cost,
image models with per-operation prices, creators with earnings rules, users who start with a
package's worth of credits and top up when they run low.

Everything is deterministic so two demo runs tell the same story.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from modelbank.catalog.costs import CostImport, Mode
from modelbank.catalog.tiers import Tier
from modelbank.earnings.rules import EarningsRule
from modelbank.money import UCR_PER_CREDIT
from modelbank.replay import CatalogEntry, TopUpPolicy, chat_catalog, find_cost, operation_price

DEMO_USERS = 40
"""Users in the demo; Zipf popularity makes a handful of them the heavy spenders."""
DEMO_CREATORS = ("studio-aiko", "pixel-forge", "dr-ghibli")
"""Users who created models (they also use models, including their own)."""
DEMO_STARTING_CREDITS = 200
"""Purchased credits each user starts with ($2 of cash basis at 100 credits per USD)."""
DEMO_BATCH_EVENTS = 100
"""Events per transaction in the demo: users look at their balance (and top up) between
batches, so a smaller batch is closer to a person's pace than the replay's 1,000."""
DEMO_TOP_UP = TopUpPolicy(
    package="popular", low_balance_ucr=50 * UCR_PER_CREDIT, max_per_user=15, auto_percent=50
)
"""Users buy the Popular package (200 credits, $17.99) when a charge leaves them under 50
credits or a request is refused for want of credits, at most 15 times each; half of them
(``auto_percent``) through auto top-up (issue 13: with seed 0, 30 auto top-ups by 8 users,
16 bought by hand by 10; 52.7 % of the events are refused with no top-ups at all): the heaviest
user (about a quarter of the traffic) reaches that cap near the end of the trace, so a few
honest rejections remain (32 of 8,819 with seed 0)."""

IMAGE_CATALOG: tuple[tuple[str, str, str, str, str | None, EarningsRule | None], ...] = (
    # slug, source model for the cost, operation price, category, creator, earnings rule
    ("dall-e-3", "dall-e-3", "dalle3_image", "Realistic", None, None),
    ("stable-diffusion-xl", "stable-diffusion-xl-v1", "stable_diffusion_image", "Fantasy",
     None, None),
    ("ghibli-style", "stable-diffusion-xl-v1", "ghibli_style", "Anime", "dr-ghibli",
     EarningsRule(per_use_ucr=500_000, share_bps=0)),
    ("cartoon-style", "stable-diffusion-xl-v1", "cartoon_style", "Anime", "pixel-forge",
     EarningsRule(share_bps=3_000)),
)  # fmt: skip
"""Image products at DESIGN §4's per-operation prices; two are creators' style models."""


def demo_users() -> list[str]:
    """External ids of the demo's users, most active first (Zipf rank order)."""
    return [f"user-{i:03d}" for i in range(1, DEMO_USERS + 1)] + list(DEMO_CREATORS)


def demo_catalog(costs: CostImport, image_costs: CostImport | None = None) -> list[CatalogEntry]:
    """Chat models of several tiers priced from ``costs`` (creator-owned ones earn by rule),
    then the image products of :data:`IMAGE_CATALOG`, whose provider cost comes from
    ``image_costs`` (default ``costs``). Popular models first."""
    chats = chat_catalog(costs, 6)
    owned = {
        2: ("studio-aiko", EarningsRule(per_token_ucr=Decimal(2), share_bps=0), "Anime"),
        4: ("pixel-forge", EarningsRule(share_bps=2_500), "Fantasy"),
    }
    entries: list[CatalogEntry] = []
    for index, entry in enumerate(chats):
        if index in owned:
            owner, owner_rule, owner_category = owned[index]
            entry = replace(entry, creator=owner, rule=owner_rule, category=owner_category)
        entries.append(entry)
    for slug, source, operation, category, creator, rule in IMAGE_CATALOG:
        entries.append(
            CatalogEntry(
                slug=slug,
                cost=find_cost(image_costs or costs, source),
                tier=Tier.IMAGE,
                mode=Mode.IMAGE_GENERATION,
                category=category,
                creator=creator,
                explicit_ucr=operation_price(operation),
                rule=rule,
            )
        )
    return entries
