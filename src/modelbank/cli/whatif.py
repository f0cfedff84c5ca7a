"""``modelbank replay TRACE --what-if SHEET / --markup TIER=X / --demand MODEL=LEVEL``: the
options, the run (:mod:`modelbank.trace_whatif`, which writes nothing) and its Rich or JSON
report."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from modelbank.analytics.whatif import Figures, Proposal, WhatIfReport, parse_demand, parse_markups
from modelbank.catalog.costs import CostImport
from modelbank.catalog.pricesheet import load_litellm_sheet
from modelbank.cli.common import console, migrated_engine
from modelbank.config import Settings
from modelbank.db.engine import session_factory
from modelbank.money import UCR_PER_CREDIT, format_credits, format_usd
from modelbank.replay import CatalogEntry
from modelbank.trace_whatif import what_if_replay
from modelbank.traces.readers import TraceRequest

WhatIfOption = Annotated[
    Path | None,
    typer.Option(
        "--what-if",
        help="Price the trace under today's prices and under this LiteLLM price sheet's"
        " provider costs (plain or .gz), writing nothing; no charge is made.",
        show_default=False,
    ),
]
MarkupOption = Annotated[
    list[str] | None,
    typer.Option(
        "--markup",
        help="What-if tier markup, TIER=X (e.g. large=1.54); repeatable. Writes nothing.",
        show_default=False,
    ),
]
DemandOption = Annotated[
    list[str] | None,
    typer.Option(
        "--demand",
        help="What-if demand level of a model, MODEL=LEVEL (high, medium, low); repeatable."
        " Writes nothing.",
        show_default=False,
    ),
]


def proposal_of(
    sheet: Path | None, markups: Sequence[str] | None, demand: Sequence[str] | None
) -> Proposal | None:
    """The proposal the options make; None when no what-if option is given. Raises
    :class:`~modelbank.analytics.whatif.InvalidWhatIf` (bad override) and
    :class:`~modelbank.catalog.costs.PriceSheetError` (unreadable sheet)."""
    if sheet is None and not markups and not demand:
        return None
    return Proposal(
        costs=None if sheet is None else load_litellm_sheet(sheet),
        tiers=parse_markups(markups or ()),
        demand=parse_demand(demand or ()),
    )


def emit(
    report: WhatIfReport, left_out: Counter[str], *, as_json: bool, extra: dict[str, Any]
) -> None:
    """Print the what-if: one JSON object with ``--json``, else a table per model (today →
    proposed) with a total row, and the wallets, the events left out and the assumptions."""
    if as_json:
        data = {**extra, **report.as_dict(), "left_out": dict(left_out)}
        print(json.dumps(data, indent=2, default=str))
        return
    table = Table(title="price what-if: today → proposed (nothing written)", title_justify="left")
    for name in ("model", "tier", "events", "revenue", "Δ revenue", "provider cost", "earnings"):
        table.add_column(name, justify="left" if name in ("model", "tier") else "right")
    table.add_column("margin", justify="right")
    table.add_column("Δ margin", justify="right")
    for line in report.lines:
        mark = " *" if line.changed else ""
        table.add_row(
            line.model.slug + mark, line.model.tier.value, *_cells(line.now, line.proposed)
        )
    table.add_section()
    table.add_row("total", "", *_cells(report.now, report.proposed), style="bold")
    console.print(table)
    console.print(
        f"users: {report.users:,}; run dry today {report.dry_now:,}, proposed"
        f" {report.dry_proposed:,}; unfunded events today {report.now.unfunded_events:,},"
        f" proposed {report.proposed.unfunded_events:,}  (* = price changed)",
        highlight=False,
    )
    if left_out:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(left_out.items()))
        console.print(f"events left out: {reasons}", highlight=False)
    for assumption in report.assumptions:
        console.print(f"assumed: {assumption}", highlight=False, soft_wrap=True)


def _cells(now: Figures, proposed: Figures) -> list[str]:
    def pair(a: int, b: int, fmt: Any) -> str:
        return fmt(a) if a == b else f"{fmt(a)} → {fmt(b)}"

    return [
        f"{now.events:,}",
        pair(now.revenue_ucr, proposed.revenue_ucr, _credits),
        _signed(proposed.revenue_ucr - now.revenue_ucr),
        pair(now.cost_uusd, proposed.cost_uusd, format_usd),
        pair(now.earnings_ucr, proposed.earnings_ucr, _credits),
        pair(now.margin_ucr, proposed.margin_ucr, _credits),
        _signed(proposed.margin_ucr - now.margin_ucr),
    ]


def _credits(ucr: int) -> str:
    return format_credits(ucr, 2)


def _signed(ucr: int) -> str:
    text = format_credits(abs(ucr), 2)
    return "0" if ucr == 0 else ("+" if ucr > 0 else "−") + text


def run(
    settings: Settings,
    trace: Path,
    requests: Sequence[TraceRequest],
    proposal: Proposal,
    entries: Sequence[CatalogEntry],
    user_names: Sequence[str],
    *,
    seed: int,
    credits: int,
    costs: CostImport,
    as_json: bool,
) -> None:
    """Price the replay's events under today's prices and ``proposal`` and print the
    report; the database is left as it was (the set-up is rolled back)."""
    engine = migrated_engine(settings)
    try:
        report, left_out = what_if_replay(
            session_factory(engine),
            requests,
            proposal,
            entries=entries,
            user_names=user_names,
            credits_ucr=credits * UCR_PER_CREDIT,
            seed=seed,
            key_prefix=f"replay:{trace.name}:{seed}",
            credits_per_usd=settings.credits_per_usd,
            costs=costs,
        )
    finally:
        engine.dispose()
    extra = {"trace": str(trace), "prices": costs.source, "seed": seed, "what_if": True}
    emit(report, left_out, as_json=as_json, extra=extra)
