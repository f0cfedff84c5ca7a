"""HTTP bodies of the price what-if (``POST /api/v1/admin/pricing/what-if``) and their
presenters from :mod:`modelbank.analytics.whatif`. Credits ``*_ucr`` µcr with a display
string; provider cost ``cost_uusd`` µUSD with a display string."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from modelbank.analytics.whatif import (
    Figures,
    ModelLine,
    Proposal,
    WhatIfReport,
    parse_demand,
    parse_markups,
)
from modelbank.api.schemas import Strict, Timestamp
from modelbank.catalog.pricesheet import import_litellm_sheet
from modelbank.money import format_credits, format_usd

MAX_OVERRIDES = 200
"""Most markup or demand overrides in one request."""


class WhatIfIn(Strict):
    """The period of recorded usage to price again and what to change. Overrides are
    checked as the CLI's ``--markup TIER=X`` / ``--demand MODEL=LEVEL`` are: an unknown
    tier, a markup outside (0, 1000], an unknown level or model is a 422 problem
    ``invalid_what_if``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: Timestamp = Field(alias="from", description="first moment of the period (UTC)")
    end: Timestamp = Field(alias="to", description="end of the period, excluded (UTC)")
    markups: Annotated[dict[str, str], Field(max_length=MAX_OVERRIDES)] = Field(
        default_factory=dict,
        description='tier → proposed markup as a decimal string, e.g. {"large": "1.54"}',
    )
    demand: Annotated[dict[str, str], Field(max_length=MAX_OVERRIDES)] = Field(
        default_factory=dict,
        description='model slug → proposed demand level, e.g. {"gpt-4o": "high"}',
    )
    price_sheet: dict[str, Any] | None = Field(
        default=None,
        description="a LiteLLM model_prices_and_context_window.json object: proposed"
        " provider costs of the models it names",
    )

    def proposal(self) -> Proposal:
        """The domain proposal. Raises :class:`~modelbank.analytics.whatif.InvalidWhatIf`."""
        return Proposal(
            costs=None
            if self.price_sheet is None
            else import_litellm_sheet(self.price_sheet, source="request"),
            tiers=parse_markups(f"{tier}={value}" for tier, value in self.markups.items()),
            demand=parse_demand(f"{slug}={level}" for slug, level in self.demand.items()),
        )


class FiguresOut(BaseModel):
    events: int
    revenue_ucr: int
    revenue: str
    cost_uusd: int
    cost: str
    cost_ucr: int
    earnings_ucr: int
    margin_ucr: int
    margin: str
    unfunded_events: int = Field(description="events a wallet could not have paid")
    unfunded_ucr: int


class DifferenceOut(BaseModel):
    """Proposed − now."""

    revenue_ucr: int
    cost_uusd: int
    cost_ucr: int
    earnings_ucr: int
    margin_ucr: int
    unfunded_events: int


class WhatIfModelOut(BaseModel):
    model_id: int
    model: str
    name: str
    tier: str
    changed: bool = Field(description="whether the proposal changes this model's price")
    now: FiguresOut
    proposed: FiguresOut
    difference: DifferenceOut
    recorded: FiguresOut | None


class WhatIfOut(BaseModel):
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    proposal: dict[str, Any]
    users: int
    users_dry_now: int
    users_dry_proposed: int
    now: FiguresOut
    proposed: FiguresOut
    difference: DifferenceOut
    recorded: FiguresOut | None
    models: list[WhatIfModelOut]
    assumptions: list[str]


def figures_out(f: Figures) -> FiguresOut:
    return FiguresOut(
        **f.as_dict(),
        revenue=format_credits(f.revenue_ucr),
        cost=format_usd(f.cost_uusd),
        margin=format_credits(f.margin_ucr),
    )


def _model_out(line: ModelLine) -> WhatIfModelOut:
    return WhatIfModelOut(
        model_id=line.model.id,
        model=line.model.slug,
        name=line.model.name,
        tier=line.model.tier.value,
        changed=line.changed,
        now=figures_out(line.now),
        proposed=figures_out(line.proposed),
        difference=DifferenceOut(**line.difference),
        recorded=None if line.recorded is None else figures_out(line.recorded),
    )


def what_if_out(report: WhatIfReport) -> WhatIfOut:
    assert report.start is not None and report.end is not None
    return WhatIfOut(
        start=report.start,
        end=report.end,
        proposal=report.proposal.describe(),
        users=report.users,
        users_dry_now=report.dry_now,
        users_dry_proposed=report.dry_proposed,
        now=figures_out(report.now),
        proposed=figures_out(report.proposed),
        difference=DifferenceOut(**report.difference),
        recorded=None if report.recorded is None else figures_out(report.recorded),
        models=[_model_out(line) for line in report.lines],
        assumptions=report.assumptions,
    )
