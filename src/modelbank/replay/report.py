"""What a replay did (DESIGN §15): the figures ``modelbank replay`` and ``modelbank demo``
print. Amounts are integers: µcr (``*_ucr``) and µUSD (``*_uusd``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from modelbank.metering import service as metering


@dataclass
class ModelTally:
    """Charged events of one model and what they brought in (µcr; cost in µUSD)."""

    category: str = "General"
    events: int = 0
    revenue_ucr: int = 0
    provider_cost_uusd: int = 0
    creator_earnings_ucr: int = 0

    def margin_ucr(self, credits_per_usd: Decimal) -> int:
        """Revenue − provider cost (µUSD × credits per USD = µcr, truncated) − creator
        earnings: what the platform keeps (DESIGN §8)."""
        return (
            self.revenue_ucr
            - int(self.provider_cost_uusd * credits_per_usd)
            - self.creator_earnings_ucr
        )


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
    by_model: dict[str, ModelTally] = field(default_factory=dict)
    users_created: int = 0
    """Users this replay created (by external id, as the trace or the assignment named them)."""
    models_created: list[str] = field(default_factory=list)
    """Models this replay added to the catalog (its own catalog, and models a trace named that
    the price source knew)."""
    unknown_models: Counter[str] = field(default_factory=Counter)
    """Models a trace named that neither the catalog nor the price source knew → events."""
    top_ups: int = 0
    """Credit packages bought (manual provider, confirmed by the operator step)."""
    top_up_users: int = 0
    top_up_credits_ucr: int = 0
    top_up_paid_uusd: int = 0
    auto_top_ups: int = 0
    """Auto top-ups completed (issue 13: started by the users' auto top-up, manual provider,
    confirmed by the operator step)."""
    auto_top_up_users: int = 0
    auto_top_up_credits_ucr: int = 0
    auto_top_up_paid_uusd: int = 0
    retried: int = 0
    """Requests rejected for insufficient funds and charged again after their user topped up."""
    sources: list[str] = field(default_factory=list)
    """Where the data came from (trace, prices), one credit line each."""

    @property
    def margin_ucr(self) -> int:
        """Revenue − provider cost (at ``credits_per_usd``) − creator earnings, µcr."""
        cost_ucr = int(self.provider_cost_uusd * self.credits_per_usd)
        return self.revenue_ucr - cost_ucr - self.creator_earnings_ucr

    @property
    def events_per_s(self) -> int:
        """Charging throughput over the replay loop (events / wall-clock second)."""
        return int(self.events / self.seconds) if self.seconds else 0

    def tally(self, slug: str, category: str, result: metering.ChargeResult) -> None:
        """Count one event's final result (after any retry)."""
        if result.status == "rejected":
            self.rejected += 1
            self.rejected_by_reason[result.error_code or "unknown"] += 1
            return
        if result.status == "replayed":
            self.replayed += 1  # charged by an earlier run: not this run's revenue
            return
        self.charged += 1
        self.revenue_ucr += result.charge_ucr
        self.provider_cost_uusd += result.cost_uusd
        self.creator_earnings_ucr += result.earnings_ucr
        model = self.by_model.setdefault(slug, ModelTally(category))
        model.events += 1
        model.revenue_ucr += result.charge_ucr
        model.provider_cost_uusd += result.cost_uusd
        model.creator_earnings_ucr += result.earnings_ucr

    def top_models(self, limit: int = 5) -> list[dict[str, Any]]:
        """Models by revenue, highest first: ``{model, category, events, revenue_ucr}``."""
        ranked = sorted(self.by_model.items(), key=lambda kv: (-kv[1].revenue_ucr, kv[0]))
        return [
            {"model": m, "category": t.category, "events": t.events, "revenue_ucr": t.revenue_ucr}
            for m, t in ranked[:limit]
        ]

    def by_category(self) -> list[dict[str, Any]]:
        """Charged events per model category, by revenue (highest first): ``{category,
        events, revenue_ucr, provider_cost_uusd, creator_earnings_ucr, margin_ucr}``."""
        totals: dict[str, ModelTally] = {}
        for tally in self.by_model.values():
            into = totals.setdefault(tally.category, ModelTally(tally.category))
            into.events += tally.events
            into.revenue_ucr += tally.revenue_ucr
            into.provider_cost_uusd += tally.provider_cost_uusd
            into.creator_earnings_ucr += tally.creator_earnings_ucr
        ranked = sorted(totals.values(), key=lambda t: (-t.revenue_ucr, t.category))
        return [
            {
                "category": t.category,
                "events": t.events,
                "revenue_ucr": t.revenue_ucr,
                "provider_cost_uusd": t.provider_cost_uusd,
                "creator_earnings_ucr": t.creator_earnings_ucr,
                "margin_ucr": t.margin_ucr(self.credits_per_usd),
            }
            for t in ranked
        ]

    def as_dict(self) -> dict[str, Any]:
        """The JSON report (``--json``)."""
        return {
            "events": self.events,
            "charged": self.charged,
            "replayed": self.replayed,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "retried_after_top_up": self.retried,
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
            "top_ups": {
                "purchases": self.top_ups,
                "users": self.top_up_users,
                "credits_ucr": self.top_up_credits_ucr,
                "paid_uusd": self.top_up_paid_uusd,
            },
            "auto_top_ups": {
                "purchases": self.auto_top_ups,
                "users": self.auto_top_up_users,
                "credits_ucr": self.auto_top_up_credits_ucr,
                "paid_uusd": self.auto_top_up_paid_uusd,
            },
            "users_created": self.users_created,
            "models_created": self.models_created,
            "unknown_models": dict(self.unknown_models),
            "by_category": self.by_category(),
            "top_models": self.top_models(),
            "data_sources": self.sources,
        }
