"""Replay a usage trace through the full pipeline (DESIGN §15): set up a catalog from real
provider prices, users with purchased credits and creators, then charge every request in
batches and report revenue, cost, earnings and the ledger's health.

This module orchestrates the domains through their services only; ``modelbank replay`` and
``modelbank demo`` are thin over it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from modelbank.catalog import service as catalog
from modelbank.catalog.costs import IMAGE_MODES, CostImport, Mode, ProviderCost
from modelbank.catalog.errors import ModelExists
from modelbank.catalog.tiers import Tier, detect_tier
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.errors import InvalidInput
from modelbank.ledger import invariants
from modelbank.metering import service as metering
from modelbank.money import UCR_PER_CREDIT, credits_to_ucr, round_uusd
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.pricing.markups import OPERATION_PRICES_CREDITS
from modelbank.traces.assign import Assigner
from modelbank.traces.readers import TraceRequest
from modelbank.users import service as users
from modelbank.wallets import grants
from modelbank.wallets import service as wallets

BATCH_EVENTS = metering.MAX_BATCH_EVENTS
"""Events charged per transaction: the batch path is ~5× faster than one per transaction."""

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


@dataclass
class ReplayReport:
    """What a replay did. Amounts: µcr (``*_ucr``) and µUSD (``*_uusd``)."""

    events: int = 0
    charged: int = 0
    replayed: int = 0
    rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    revenue_ucr: int = 0
    provider_cost_uusd: int = 0
    creator_earnings_ucr: int = 0
    seconds: Decimal = Decimal(0)
    credits_per_usd: Decimal = Decimal(100)
    ledger_ok: bool = False
    ledger_violations: list[str] = field(default_factory=list)
    burned_purchased_ucr: int = 0
    """Purchased credits spent on usage (all time in this database)."""
    burned_bonus_ucr: int = 0
    """Bonus credits spent on usage (all time)."""
    recognised_uusd: int = 0
    """Cash basis of the purchased credits spent: revenue to recognise (µUSD)."""
    by_model: dict[str, list[int]] = field(default_factory=dict)  # slug → [events, revenue]

    @property
    def margin_ucr(self) -> int:
        """Revenue − provider cost (at ``credits_per_usd``) − creator earnings, µcr."""
        cost_ucr = int(self.provider_cost_uusd * self.credits_per_usd)
        return self.revenue_ucr - cost_ucr - self.creator_earnings_ucr

    @property
    def events_per_s(self) -> int:
        """Charging throughput over the replay loop (events / wall-clock second)."""
        return int(self.events / self.seconds) if self.seconds else 0

    def top_models(self, limit: int = 5) -> list[dict[str, Any]]:
        """Models by revenue, highest first: ``{model, events, revenue_ucr}``."""
        ranked = sorted(self.by_model.items(), key=lambda kv: (-kv[1][1], kv[0]))
        return [{"model": m, "events": e, "revenue_ucr": r} for m, (e, r) in ranked[:limit]]

    def as_dict(self) -> dict[str, Any]:
        """The JSON report (``--json``)."""
        return {
            "events": self.events,
            "charged": self.charged,
            "replayed": self.replayed,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "revenue_ucr": self.revenue_ucr,
            "provider_cost_uusd": self.provider_cost_uusd,
            "creator_earnings_ucr": self.creator_earnings_ucr,
            "margin_ucr": self.margin_ucr,
            "events_per_s": self.events_per_s,
            "seconds": float(self.seconds),
            "ledger_ok": self.ledger_ok,
            "ledger_violations": self.ledger_violations,
            "burned_purchased_ucr": self.burned_purchased_ucr,
            "burned_bonus_ucr": self.burned_bonus_ucr,
            "recognised_uusd": self.recognised_uusd,
            "top_models": self.top_models(),
        }


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


WELCOME_BONUS_UCR = 5_000_000
"""Every replayed user also gets 5 bonus credits, which burn before the purchased ones."""


def ensure_users(
    session: Session,
    names: Sequence[str],
    *,
    credits_ucr: int,
    grant_key: str,
    credits_per_usd: Decimal = Decimal(100),
    bonus_ucr: int = WELCOME_BONUS_UCR,
) -> dict[str, int]:
    """Create missing users; grant each ``credits_ucr`` of purchased credits (cost basis at
    ``credits_per_usd``) and ``bonus_ucr`` of bonus credits (idempotent per ``grant_key``);
    return external id → user id."""
    known = users.find_by_external_ids(session, names)
    basis = round_uusd(Decimal(credits_ucr) / credits_per_usd)
    for name in names:
        if name not in known:
            known[name] = users.create_user(session, name).id
        if credits_ucr > 0:
            wallets.grant_info(
                session,
                known[name],
                credits_ucr,
                idempotency_key=f"{grant_key}:{name}",
                cost_basis_uusd=basis,
            )
        if bonus_ucr > 0:
            wallets.grant_info(
                session,
                known[name],
                bonus_ucr,
                source=wallets.GrantSource.BONUS,
                idempotency_key=f"{grant_key}:{name}:bonus",
            )
    return known


def ensure_models(
    session: Session, entries: Sequence[CatalogEntry], user_ids: dict[str, int]
) -> None:
    """Create the catalog entries that do not exist yet, priced and with their rules."""
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


def replay(
    factory: sessionmaker[Session],
    requests: Sequence[TraceRequest],
    *,
    assigner: Assigner,
    user_ids: dict[str, int],
    key_prefix: str,
    image_models: frozenset[str] = frozenset(),
    on_batch: Callable[[int], None] | None = None,
    credits_per_usd: Decimal = Decimal(100),
) -> ReplayReport:
    """Charge every request, :data:`BATCH_EVENTS` per transaction, and verify the ledger.

    Request *i* goes to ``assigner.assign(i, request)``; its idempotency key is
    ``f"{key_prefix}:{i}"``, so replaying the same trace with the same prefix charges
    nothing twice (the events come back ``replayed``). Requests assigned to a model in
    ``image_models`` become one ``image_generation`` unit. ``on_batch(n)`` is called after
    each committed batch of ``n`` events (progress bars).
    """
    report = ReplayReport(events=len(requests), credits_per_usd=credits_per_usd)
    started = time.perf_counter()
    for start in range(0, len(requests), BATCH_EVENTS):
        chunk = requests[start : start + BATCH_EVENTS]
        events: list[metering.UsageEvent] = []
        slugs: list[str] = []
        for offset, request in enumerate(chunk):
            user, model = assigner.assign(start + offset, request)
            slugs.append(model)
            image = model in image_models
            events.append(
                metering.UsageEvent(
                    idempotency_key=f"{key_prefix}:{start + offset}",
                    user_id=user_ids[user],
                    model=model,
                    usage_type="image_generation" if image else "chat",
                    input_tokens=0 if image else request.input_tokens,
                    output_tokens=0 if image else request.output_tokens,
                    cached_input_tokens=0 if image else request.cached_input_tokens,
                    units=1 if image else 0,
                    occurred_at=request.occurred_at,
                )
            )
        with factory() as session, session.begin():
            results = metering.charge_batch(session, events)
        for slug, result in zip(slugs, results, strict=True):
            _tally(report, slug, result)
        if on_batch is not None:
            on_batch(len(chunk))
    report.seconds = Decimal(str(round(time.perf_counter() - started, 6)))
    with factory() as session, session.begin():
        violations: list[object] = [*invariants.check(session), *grants.check(session)]
        recognised = grants.recognition(session)
    report.ledger_ok = not violations
    report.ledger_violations = [str(v) for v in violations]
    report.burned_purchased_ucr = recognised.purchased_ucr
    report.burned_bonus_ucr = recognised.bonus_ucr
    report.recognised_uusd = recognised.purchased_basis_uusd
    return report


def replay_catalog(
    factory: sessionmaker[Session],
    requests: Sequence[TraceRequest],
    *,
    entries: Sequence[CatalogEntry],
    user_names: Sequence[str],
    credits_ucr: int,
    seed: int,
    key_prefix: str,
    on_batch: Callable[[int], None] | None = None,
    credits_per_usd: Decimal = Decimal(100),
) -> ReplayReport:
    """Set up ``user_names`` (each granted ``credits_ucr`` purchased µcr, idempotent per
    ``key_prefix``) and the catalog ``entries``, then :func:`replay` ``requests`` over them,
    ranked in the given orders for the Zipf assignment from ``seed``. Image-mode entries are
    charged one image per request."""
    with factory() as session, session.begin():
        user_ids = ensure_users(
            session,
            user_names,
            credits_ucr=credits_ucr,
            grant_key=key_prefix,
            credits_per_usd=credits_per_usd,
        )
        ensure_models(session, entries, user_ids)
    return replay(
        factory,
        requests,
        assigner=Assigner(list(user_names), [e.slug for e in entries], seed=seed),
        user_ids=user_ids,
        key_prefix=key_prefix,
        image_models=frozenset(e.slug for e in entries if e.mode in IMAGE_MODES),
        on_batch=on_batch,
        credits_per_usd=credits_per_usd,
    )


def _tally(report: ReplayReport, slug: str, result: metering.ChargeResult) -> None:
    if result.status == "rejected":
        report.rejected += 1
        report.rejected_by_reason[result.error_code or "unknown"] += 1
        return
    if result.status == "replayed":
        report.replayed += 1  # charged by an earlier run: not this run's revenue
        return
    report.charged += 1
    report.revenue_ucr += result.charge_ucr
    report.provider_cost_uusd += result.cost_uusd
    report.creator_earnings_ucr += result.earnings_ucr
    tally = report.by_model.setdefault(slug, [0, 0])
    tally[0] += 1
    tally[1] += result.charge_ucr


def credits(amount: int) -> int:
    """Whole credits to µcr."""
    return amount * UCR_PER_CREDIT


__all__ = ["CatalogEntry", "ReplayReport", "chat_catalog", "replay", "replay_catalog"]
