"""Admin — the price what-if page (DESIGN §4, §8; issue 12 item 3): a form of proposed tier
markups and demand levels over a period of recorded usage, and a chart of revenue and margin
per model today vs proposed, computed by :func:`modelbank.analytics.whatif.recorded_what_if`
(read-only). This module turns the form into a proposal and the report into display values;
the template only lays them out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from modelbank.analytics import whatif
from modelbank.analytics.whatif import Proposal, WhatIfReport
from modelbank.catalog.tiers import Tier
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.pricing.markups import TIER_MARKUPS
from modelbank.web import views
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, state_of

router = APIRouter(prefix="/admin", include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
DEFAULT_DAYS = 30
"""Period shown when the form gives none: the last 30 days, today included."""
CHART_MODELS = 20
"""Models in the chart (by revenue today); every model is in the table."""
_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass(frozen=True, slots=True)
class WhatIfForm:
    """The form as submitted (strings, to show back) and the period it names (UTC days,
    ``last`` included)."""

    first: date
    last: date
    markups: dict[str, str]
    demand: str
    run: bool

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), tzinfo=UTC)

    def proposal(self) -> Proposal:
        """The proposal of the form. Raises
        :class:`~modelbank.analytics.whatif.InvalidWhatIf`."""
        items = [f"{tier}={value}" for tier, value in self.markups.items() if value.strip()]
        demand = [item for item in _SEPARATORS.split(self.demand) if item]
        return Proposal(tiers=whatif.parse_markups(items), demand=whatif.parse_demand(demand))


def read_form(request: Request, today: date) -> WhatIfForm:
    """The what-if form from the query string: ``from``/``to`` (YYYY-MM-DD), one
    ``markup_<tier>`` per tier, ``demand`` (``model=level`` items separated by spaces or
    commas), ``run`` (compute). Raises :class:`~modelbank.errors.InvalidInput` for a bad
    date."""
    q = request.query_params
    last = _day(q.get("to"), today)
    first = _day(q.get("from"), last - timedelta(days=DEFAULT_DAYS - 1))
    return WhatIfForm(
        first=first,
        last=last,
        markups={t.value: q.get(f"markup_{t.value}", "")[:20] for t in Tier},
        demand=q.get("demand", "")[:2000],
        run=q.get("run") is not None,
    )


def _day(text: str | None, default: date) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"bad date {text[:20]!r}: expected YYYY-MM-DD") from None


def chart(report: WhatIfReport) -> dict[str, Any]:
    """Grouped bars per model (the :data:`CHART_MODELS` with most revenue today): revenue
    today, revenue proposed, margin today, margin proposed, in credits."""
    lines = report.lines[:CHART_MODELS]
    x = [line.model.slug for line in lines]
    series = (
        ("revenue today", [line.now.revenue_ucr for line in lines], views.ACCENT, None),
        ("revenue proposed", [line.proposed.revenue_ucr for line in lines], views.ACCENT, "/"),
        ("margin today", [line.now.margin_ucr for line in lines], views.ACCENT_2, None),
        ("margin proposed", [line.proposed.margin_ucr for line in lines], views.ACCENT_2, "/"),
    )
    data = [
        {
            "type": "bar",
            "name": name,
            "x": x,
            "y": [amount / 1_000_000 for amount in values],  # chart coordinates, not money
            "marker": {"color": colour, **({"pattern": {"shape": shape}} if shape else {})},
            "hovertemplate": f"%{{x}}: {name} %{{y:,.2f}} credits<extra></extra>",
        }
        for name, values, colour, shape in series
    ]
    layout = views._layout(
        "credits",
        barmode="group",
        showlegend=True,
        legend={"orientation": "h", "x": 0, "y": 1.08, "yanchor": "bottom"},
    )
    return {"data": data, "layout": layout}


@router.get("/pricing/what-if")
def what_if_page(
    request: Request,
    viewer: SignedIn,
    run: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    """The what-if form and, once run, the report of recorded usage repriced."""
    viewer.principal.require_admin()
    form = read_form(request, utcnow().date())
    report: WhatIfReport | None = None
    error: str | None = None
    if form.run:
        try:
            proposal = form.proposal()
            with state_of(request).db.read() as session:
                report = whatif.recorded_what_if(session, form.start, form.end, proposal)
        except (whatif.InvalidWhatIf, whatif.WhatIfTooLarge) as exc:
            error = exc.message
    return render(
        request,
        "admin_whatif.html",
        viewer,
        {
            "form": form,
            "tiers": [(t.value, TIER_MARKUPS[t]) for t in Tier],
            "report": report,
            "what_if_chart": None if report is None else chart(report),
            "charts": report is not None,
            "error": error,
        },
        status_code=422 if error else 200,
    )
