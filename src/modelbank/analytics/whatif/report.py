"""The what-if's answer: per model and in total, the figures under today's prices, under the
proposed ones and their difference; the users who would have run dry under each; for
recorded usage, what was really charged beside them (DESIGN §4, §8)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelbank.analytics.whatif.proposal import Proposal
from modelbank.analytics.whatif.simulate import Figures, WhatIf
from modelbank.catalog.service import ModelInfo

_DIFFERENCE_FIELDS = ("revenue_ucr", "cost_uusd", "cost_ucr", "earnings_ucr", "margin_ucr")


def difference(now: Figures, proposed: Figures) -> dict[str, int]:
    """Proposed − now of the money figures (µcr; ``cost_uusd`` µUSD), and of unfunded
    events."""
    a, b = now.as_dict(), proposed.as_dict()
    found = {name: b[name] - a[name] for name in _DIFFERENCE_FIELDS}
    found["unfunded_events"] = b["unfunded_events"] - a["unfunded_events"]
    return found


@dataclass(frozen=True, slots=True)
class ModelLine:
    """One model's figures: ``changed`` when the proposal changes its price."""

    model: ModelInfo
    changed: bool
    now: Figures
    proposed: Figures
    recorded: Figures | None = None

    @property
    def difference(self) -> dict[str, int]:
        """Proposed − now (see :func:`difference`)."""
        return difference(self.now, self.proposed)


@dataclass(frozen=True, slots=True)
class WhatIfReport:
    """A finished what-if. ``source``: ``recorded`` (usage rows of ``start``…``end``) or
    ``trace`` (a replay's events); ``users``: users with events; ``dry_now`` /
    ``dry_proposed``: of them, users with an unfunded event under each price set;
    ``assumptions``: the approximations made, in words."""

    source: str
    proposal: Proposal
    lines: list[ModelLine]
    now: Figures
    proposed: Figures
    users: int
    dry_now: int
    dry_proposed: int
    recorded: Figures | None = None
    start: datetime | None = None
    end: datetime | None = None
    assumptions: list[str] = field(default_factory=list)

    @property
    def difference(self) -> dict[str, int]:
        """Proposed − now over every model."""
        return difference(self.now, self.proposed)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (CLI ``--json``; the API has its schema)."""
        return {
            "source": self.source,
            "from": None if self.start is None else self.start.isoformat(),
            "to": None if self.end is None else self.end.isoformat(),
            "proposal": self.proposal.describe(),
            "users": self.users,
            "users_dry_now": self.dry_now,
            "users_dry_proposed": self.dry_proposed,
            "now": self.now.as_dict(),
            "proposed": self.proposed.as_dict(),
            "difference": self.difference,
            "recorded": None if self.recorded is None else self.recorded.as_dict(),
            "models": [
                {
                    "model": line.model.slug,
                    "model_id": line.model.id,
                    "tier": line.model.tier.value,
                    "changed": line.changed,
                    "now": line.now.as_dict(),
                    "proposed": line.proposed.as_dict(),
                    "difference": line.difference,
                    "recorded": None if line.recorded is None else line.recorded.as_dict(),
                }
                for line in self.lines
            ],
            "assumptions": self.assumptions,
        }


def build_report(
    run: WhatIf,
    models: Mapping[int, ModelInfo],
    proposal: Proposal,
    *,
    source: str,
    recorded: Mapping[int, Figures] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    assumptions: list[str] | None = None,
) -> WhatIfReport:
    """The report of a finished :class:`~modelbank.analytics.whatif.simulate.WhatIf`; model
    lines by revenue today, highest first, then slug."""
    lines = [
        ModelLine(
            model=models[model_id],
            changed=model_id in run.changed,
            now=figures,
            proposed=run.proposed.by_model[model_id],
            recorded=None if recorded is None else recorded.get(model_id, Figures()),
        )
        for model_id, figures in run.now.by_model.items()
    ]
    lines.sort(key=lambda line: (-line.now.revenue_ucr, line.model.slug))
    total_recorded: Figures | None = None
    if recorded is not None:
        total_recorded = Figures()
        for figures in recorded.values():
            for name in ("events", "revenue_ucr", "cost_uusd", "cost_ucr", "earnings_ucr"):
                setattr(
                    total_recorded, name, getattr(total_recorded, name) + getattr(figures, name)
                )
    return WhatIfReport(
        source=source,
        proposal=proposal,
        lines=lines,
        now=run.now.total,
        proposed=run.proposed.total,
        users=len(run.users),
        dry_now=len(run.now.dry),
        dry_proposed=len(run.proposed.dry),
        recorded=total_recorded,
        start=start,
        end=end,
        assumptions=list(assumptions or []),
    )
