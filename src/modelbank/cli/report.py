"""Rendering a replay: the progress bar and the Rich (or JSON) report."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelbank.cli.common import console, err_console
from modelbank.money import format_credits, format_usd
from modelbank.replay import ReplayReport


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``advance(n)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def emit(report: ReplayReport, *, as_json: bool, extra: dict[str, Any]) -> None:
    """Print the report: one JSON object with ``--json``, else a Rich summary, a table of
    revenue and margin per model category, the top models and where the data came from."""
    data = {**extra, **report.as_dict()}
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    summary = Table(title="replay report", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for label, value in _summary_rows(report):
        summary.add_row(label, value)
    console.print(summary)
    console.print(_categories(report))
    top = Table(title="top models by revenue", title_justify="left")
    top.add_column("model")
    top.add_column("category")
    top.add_column("events", justify="right")
    top.add_column("revenue", justify="right")
    for item in report.top_models():
        top.add_row(
            item["model"],
            item["category"],
            f"{item['events']:,}",
            format_credits(item["revenue_ucr"], 2),
        )
    console.print(top)
    if report.unknown_models:
        unknown = ", ".join(f"{m} ({n:,})" for m, n in report.unknown_models.most_common(10))
        console.print(f"models neither the catalog nor the price source knows: {unknown}")
    for line in report.sources:
        console.print(f"data: {line}", highlight=False, soft_wrap=True)
    for violation in report.ledger_violations:
        err_console.print(f"[red]broken:[/] {violation}")


def _summary_rows(report: ReplayReport) -> list[tuple[str, str]]:
    rejected = ", ".join(f"{k} {v:,}" for k, v in sorted(report.rejected_by_reason.items()))
    share = f"{report.rejected / report.events:.1%}" if report.events else "0%"
    margin_share = (
        f" ({report.margin_ucr / report.revenue_ucr:.0%} of revenue)" if report.revenue_ucr else ""
    )
    return [
        ("events", f"{report.events:,}"),
        ("charged", f"{report.charged:,}"),
        ("replayed (charged before)", f"{report.replayed:,}"),
        ("rejected", f"{report.rejected:,} ({share})" + (f": {rejected}" if rejected else "")),
        ("users created", f"{report.users_created:,}"),
        ("models created", f"{len(report.models_created):,}"),
        ("top-ups (manual, confirmed)", _top_ups(report)),
        ("auto top-ups (confirmed)", _auto_top_ups(report)),
        ("refused, charged after a top-up", f"{report.retried:,}"),
        ("revenue", format_credits(report.revenue_ucr, 2)),
        ("provider cost", format_usd(report.provider_cost_uusd)),
        ("creator earnings", format_credits(report.creator_earnings_ucr, 2)),
        (
            "margin after creator earnings",
            format_credits(report.margin_ucr, 2) + margin_share,
        ),
        ("spent: bonus credits", format_credits(report.burned_bonus_ucr, 2)),
        (
            "spent: purchased credits",
            f"{format_credits(report.burned_purchased_ucr, 2)}"
            f" (cash basis {format_usd(report.recognised_uusd)})",
        ),
        ("throughput", f"{report.events_per_s:,} events/s"),
        ("ledger", "[green]ok[/]" if report.ledger_ok else "[red]BROKEN[/]"),
    ]


def _auto_top_ups(report: ReplayReport) -> str:
    if not report.auto_top_ups:
        return "none"
    return (
        f"{report.auto_top_ups:,} by {report.auto_top_up_users:,} users:"
        f" {format_credits(report.auto_top_up_credits_ucr, 0)} for"
        f" {format_usd(report.auto_top_up_paid_uusd)}"
    )


def _top_ups(report: ReplayReport) -> str:
    if not report.top_ups:
        return "none"
    return (
        f"{report.top_ups:,} by {report.top_up_users:,} users:"
        f" {format_credits(report.top_up_credits_ucr, 0)} for"
        f" {format_usd(report.top_up_paid_uusd)}"
    )


def _categories(report: ReplayReport) -> Table:
    table = Table(title="revenue per model category", title_justify="left")
    for name in ("category", "events", "revenue", "provider cost", "creator earnings", "margin"):
        table.add_column(name, justify="left" if name == "category" else "right")
    for row in report.by_category():
        table.add_row(
            row["category"],
            f"{row['events']:,}",
            format_credits(row["revenue_ucr"], 2),
            format_usd(row["provider_cost_uusd"]),
            format_credits(row["creator_earnings_ucr"], 2),
            format_credits(row["margin_ucr"], 2),
        )
    return table
