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
    """Print the report: one JSON object with ``--json``, else a Rich summary."""
    data = {**extra, **report.as_dict()}
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    summary = Table(title="replay report", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected_by_reason.items()))
    rows = [
        ("events", f"{report.events:,}"),
        ("charged", f"{report.charged:,}"),
        ("replayed (charged before)", f"{report.replayed:,}"),
        ("rejected", f"{report.rejected:,}" + (f" ({rejected})" if rejected else "")),
        ("revenue", format_credits(report.revenue_ucr, 2)),
        ("provider cost", format_usd(report.provider_cost_uusd)),
        ("creator earnings", format_credits(report.creator_earnings_ucr, 2)),
        ("platform margin", format_credits(report.margin_ucr, 2)),
        ("spent: bonus credits", format_credits(report.burned_bonus_ucr, 2)),
        (
            "spent: purchased credits",
            f"{format_credits(report.burned_purchased_ucr, 2)}"
            f" (cash basis {format_usd(report.recognised_uusd)})",
        ),
        ("throughput", f"{report.events_per_s:,} events/s"),
        ("ledger", "[green]ok[/]" if report.ledger_ok else "[red]BROKEN[/]"),
    ]
    for label, value in rows:
        summary.add_row(label, value)
    console.print(summary)
    top = Table(title="top models by revenue", title_justify="left")
    top.add_column("model")
    top.add_column("events", justify="right")
    top.add_column("revenue", justify="right")
    for item in report.top_models():
        top.add_row(item["model"], f"{item['events']:,}", format_credits(item["revenue_ucr"], 2))
    console.print(top)
    for violation in report.ledger_violations:
        err_console.print(f"[red]broken:[/] {violation}")
