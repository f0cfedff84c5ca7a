"""``modelbank rollups rebuild [--check]``: recompute the daily rollups from the usage,
earnings and refund rows (:mod:`modelbank.analytics.rebuild`), or check that they agree."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from modelbank.analytics import rebuild as rollup_rebuild
from modelbank.cli.common import (
    DB_OPTION_HELP,
    cli_errors,
    console,
    err_console,
    fail,
    settings_for,
)
from modelbank.db.engine import make_engine, read_session_factory, session_factory, transaction
from modelbank.db.migrate import current_revision, head_revision

rollups_app = typer.Typer(help="Daily rollups that dashboards read.", no_args_is_help=True)

SHOWN_DIFFERENCES = 20
"""Differences printed by ``--check`` (the count of all of them is printed too)."""


@rollups_app.command("rebuild")
def rebuild(
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only compare the stored rollups with a recomputation: exit 1 naming the"
            " differing rows, 0 when they agree. Writes nothing.",
        ),
    ] = False,
) -> None:
    """Recompute the daily rollups from the usage rows, or --check them.

    rollup_model_day, rollup_user_day and rollup_creator_day are recomputed from
    usage_events, earnings and usage_refunds and replace the stored ones in one transaction
    (readers see the old rows until it commits; charges posted meanwhile wait for it: on
    SQLite for at most the 30 s busy timeout, so run it when traffic is low on a large
    database — about a minute per 10 million usage rows). Run it after restoring a backup
    or when --check reports differences.

    Example: modelbank rollups rebuild --check
    """
    with cli_errors():
        settings = settings_for(db)
        engine = make_engine(settings.database_url)
        if current_revision(engine) != head_revision():
            engine.dispose()
            raise fail("the database schema is not at the newest revision; run `modelbank migrate`")
        started = time.perf_counter()
        try:
            with _progress() as progress:
                task = progress.add_task("rollups", total=None)

                def advance(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=max(total, 1))

                if check:
                    if engine.dialect.name == "postgresql":
                        # one snapshot for the stored rows and the recomputation
                        engine = engine.execution_options(isolation_level="REPEATABLE READ")
                    with transaction(read_session_factory(engine)) as session:
                        differences = rollup_rebuild.verify_rollups(session, on_progress=advance)
                else:
                    with transaction(session_factory(engine)) as session:
                        report = rollup_rebuild.rebuild(session, on_progress=advance)
        finally:
            engine.dispose()
    seconds = time.perf_counter() - started
    if check:
        if differences:
            for difference in differences[:SHOWN_DIFFERENCES]:
                err_console.print(f"[bold red]differs:[/] {difference}", highlight=False)
            err_console.print(
                f"{len(differences)} rollup rows differ from a recomputation"
                " (`modelbank rollups rebuild` replaces them)",
                highlight=False,
            )
            raise typer.Exit(1)
        console.print(
            "[green]rollups ok[/]: they equal a recomputation from the usage rows"
            f" ({seconds:.1f} s)"
        )
        return
    console.print(
        f"rollups rebuilt in {seconds:.1f} s: {report.model_days} model days,"
        f" {report.user_days} user days, {report.creator_days} creator days"
        f" (usage ids spanned {report.usage_ids}, refunds {report.refunds})",
        highlight=False,
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(rollups_app, name="rollups")
