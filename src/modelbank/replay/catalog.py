"""The catalog a replay charges against (DESIGN §15): real models chosen from a price source,
creators given to some of them, and models a trace names that the catalog lacks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.catalog.costs import IMAGE_MODES, CostImport, Mode, ProviderCost
from modelbank.catalog.errors import ModelExists
from modelbank.catalog.tiers import Tier, detect_tier
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.errors import InvalidInput
from modelbank.money import credits_to_ucr
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.pricing.markups import OPERATION_PRICES_CREDITS

PREFERRED_CHAT_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "llama-3.1-8b-instant",
    "claude-3-5-sonnet",
    "llama-3.3-70b-versatile",
    "deepseek-chat",
    "gemini-2.0-flash",
    "gpt-4.1-nano",
    "gpt-4.1",
    "claude-3-5-haiku",
)
"""Well-known chat models of different tiers, taken first (in this order) from the price
source; ``--models`` beyond these fills with the source's other chat models by name."""

METERED_MODES = frozenset({Mode.CHAT, Mode.EMBEDDING, *IMAGE_MODES})
"""Modes a replay can charge from a trace row: tokens (chat, embedding) or one image."""


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A model to create for a replay: slug, provider cost, and who created it."""

    slug: str
    cost: ProviderCost | None
    tier: Tier
    mode: Mode = Mode.CHAT
    category: str = "General"
    creator: str | None = None
    explicit_ucr: Rates | None = None
    rule: EarningsRule | None = None


def find_cost(costs: CostImport, ref: str) -> ProviderCost | None:
    """The cost of ``ref`` in a source: exact key, else ``openai/<ref>``, else the first key
    (by name) ending in ``/<ref>``."""
    for key in (ref, f"openai/{ref}"):
        if key in costs.costs:
            return costs.costs[key]
    suffix = f"/{ref}"
    for key in sorted(costs.costs):
        if key.endswith(suffix):
            return costs.costs[key]
    return None


def chat_catalog(costs: CostImport, count: int) -> list[CatalogEntry]:
    """``count`` priced chat models from ``costs``: :data:`PREFERRED_CHAT_MODELS` first."""
    if count < 1:
        raise InvalidInput("need at least one model")
    chosen: list[CatalogEntry] = []
    seen: set[str] = set()
    for ref in PREFERRED_CHAT_MODELS:
        cost = find_cost(costs, ref)
        if cost is not None and cost.mode is Mode.CHAT and cost.input_uusd_per_mtok > 0:
            chosen.append(CatalogEntry(ref, cost, detect_tier(ref, Mode.CHAT)))
            seen.add(ref)
        if len(chosen) == count:
            return chosen
    for key in sorted(costs.costs):
        cost = costs.costs[key]
        slug = key.lower()
        if cost.mode is not Mode.CHAT or cost.input_uusd_per_mtok <= 0 or slug in seen:
            continue
        chosen.append(CatalogEntry(slug, cost, detect_tier(key, Mode.CHAT)))
        seen.add(slug)
        if len(chosen) == count:
            break
    return chosen


def entry_from_source(costs: CostImport | None, slug: str) -> CatalogEntry | None:
    """A catalog entry for a model a trace names, priced from ``costs`` when the source knows
    it: a :data:`METERED_MODES` model with a non-zero token or per-image rate. ``None``
    otherwise (its events are then rejected as ``model_not_found``)."""
    cost = find_cost(costs, slug) if costs is not None else None
    if cost is None or cost.mode not in METERED_MODES:
        return None
    if cost.mode in IMAGE_MODES:
        priced = bool(cost.per_unit_uusd)
    else:
        priced = cost.input_uusd_per_mtok > 0 or cost.output_uusd_per_mtok > 0
    if not priced:
        return None
    return CatalogEntry(slug, cost, detect_tier(slug, cost.mode), mode=cost.mode)


def assign_creators(
    entries: Sequence[CatalogEntry], user_names: Sequence[str]
) -> list[CatalogEntry]:
    """Give every second model (ranks 2, 4, …) a creator: user ``(index × 7) mod n``, so
    creators are spread over popular and quiet users, deterministically."""
    return [
        replace(entry, creator=user_names[(index * 7) % len(user_names)]) if index % 2 else entry
        for index, entry in enumerate(entries)
    ]


def cost_rates(cost: ProviderCost | None) -> Rates:
    """A provider cost as µUSD :class:`Rates` (zero when unknown)."""
    if cost is None:
        return Rates()
    return Rates(
        input_per_mtok=cost.input_uusd_per_mtok,
        output_per_mtok=cost.output_uusd_per_mtok,
        cache_read_per_mtok=cost.cache_read_uusd_per_mtok,
        per_request=cost.per_request_uusd,
        per_unit=cost.per_unit_uusd or Decimal(0),
    )


def operation_price(name: str) -> Rates:
    """A per-operation price (DESIGN §4 defaults) as µcr :class:`Rates` per unit."""
    return Rates(per_unit=Decimal(credits_to_ucr(OPERATION_PRICES_CREDITS[name])))


def ensure_models(
    session: Session, entries: Sequence[CatalogEntry], user_ids: dict[str, int]
) -> list[str]:
    """Create the catalog entries that do not exist yet, priced and with their rules; return
    the slugs created (an existing slug is left as it is)."""
    created: list[str] = []
    for entry in entries:
        try:
            info = catalog.create_model(
                session,
                catalog.NewModel(
                    slug=entry.slug,
                    name=entry.slug,
                    provider=entry.cost.provider if entry.cost else "platform",
                    provider_model_ref=entry.cost.model_ref if entry.cost else entry.slug,
                    mode=entry.mode,
                    category=entry.category,
                    tier=entry.tier,
                    creator_id=user_ids.get(entry.creator) if entry.creator else None,
                ),
            )
        except ModelExists:
            continue
        pricing.set_price(
            session,
            info.id,
            tier=entry.tier,
            cost_uusd=cost_rates(entry.cost),
            explicit_ucr=entry.explicit_ucr,
            reason="replay catalog",
        )
        if entry.rule is not None:
            earnings.set_rule(session, info.id, entry.rule)
        created.append(entry.slug)
    return created
