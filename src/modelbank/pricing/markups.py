"""Default markups, demand levels and per-operation prices (DESIGN §4, the operator's spec).

All of them are defaults: :class:`modelbank.config.Settings` overrides them.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from modelbank.catalog.tiers import Tier


class Demand(StrEnum):
    """A model's demand level; multiplies the tier markup."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


TIER_MARKUPS: dict[Tier, Decimal] = {
    Tier.MICRO: Decimal("1.8"),
    Tier.SMALL: Decimal("1.6"),
    Tier.MEDIUM: Decimal("1.5"),
    Tier.LARGE: Decimal("1.4"),
    Tier.VISION: Decimal("1.6"),
    Tier.AUDIO: Decimal("1.7"),
    Tier.IMAGE: Decimal("2.0"),
}
"""DESIGN §4 tier multipliers: smaller models carry a larger relative markup."""

DEMAND_MARKUPS: dict[Demand, Decimal] = {
    Demand.HIGH: Decimal("1.10"),
    Demand.MEDIUM: Decimal("1.00"),
    Demand.LOW: Decimal("0.90"),
}
"""DESIGN §4 demand multipliers."""

OPERATION_PRICES_CREDITS: dict[str, Decimal] = {
    "dalle3_image": Decimal(10),
    "gemini_pro_vision_image": Decimal(8),
    "stable_diffusion_image": Decimal(3),
    "image_edit": Decimal(15),
    "video": Decimal(50),
    "meme": Decimal(5),
    "ghibli_style": Decimal(8),
    "cartoon_style": Decimal(6),
}
"""DESIGN §4 per-operation prices, in credits per operation (×1,000,000 for µcr)."""
