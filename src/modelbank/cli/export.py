"""``modelbank export KIND``: stream usage, transfers, earnings or payouts as CSV (DESIGN §8;
:mod:`modelbank.analytics.exports`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, time
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.orm import Session

from modelbank.analytics import exports
from modelbank.cli.common import DB_OPTION_HELP, cli_errors, err_console, fail, settings_for
from modelbank.db.engine import make_engine, read_session_factory, transaction
from modelbank.db.migrate import current_revision

KINDS = ", ".join(k.value for k in exports.ExportKind)


def parse_when(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date (``2025-01-31``: midnight UTC) or datetime (``…T12:00:00+02:00``; one
    without a time zone is UTC), as an aware UTC datetime. Raises ``typer.Exit(2)`` with a
    one-line message for anything else."""
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{option} {value!r} is not an ISO 8601 date or datetime (e.g. 2025-01-31 or"
            " 2025-01-31T12:00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def export(
    kind: Annotated[str, typer.Argument(help=f"What to export: {KINDS}", show_default=False)],
    user: Annotated[
        int | None,
        typer.Option("--user", min=1, help="Only this user's rows (default: every user's)"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--from", help="Rows created at or after this UTC date/datetime (ISO 8601)"),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--to", help="Rows created before this UTC date/datetime (ISO 8601)"),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", help="Output file, or - for stdout (default: KIND.csv)"),
    ] = None,
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
) -> None:
    """Export usage, transfers, earnings or payouts created in [--from, --to) as CSV.

    Rows come in id order, streamed page by page (amounts are integers: *_ucr µcr, *_uusd
    µUSD). Scope: every
    user, or one with --user (usage: their events; transfers: those touching their wallet or
    earnings account; earnings: where they are the beneficiary; payouts: theirs). Writes to a
    file with a progress bar on stderr (the file appears complete or not at all), or to stdout
    with --out -. Bad input exits 2 with a one-line message.

    Example: modelbank export usage --from 2026-01-01 --to 2026-02-01 --out usage.csv
    """
    with cli_errors():
        kind_ = exports.parse_kind(kind.strip().lower())
        start, end = parse_when(since, "--from"), parse_when(until, "--to")
        engine = make_engine(settings_for(db).database_url)
        try:
            if current_revision(engine) is None:
                raise fail("the database has no modelbank schema; run `modelbank migrate`")
            read = partial(transaction, read_session_factory(engine))
            with read() as session:  # validates everything before a byte is written
                total = exports.count(session, kind_, user_id=user, since=start, until=end)
            if out == "-":
                for chunk in exports.export_csv(read, kind_, user_id=user, since=start, until=end):
                    sys.stdout.write(chunk)
                sys.stdout.flush()
                return
            target = Path(out if out is not None else f"{kind_.value}.csv")
            written = _to_file(target, total, kind_.value, read, kind_, user, start, end)
        finally:
            engine.dispose()
    err_console.print(f"wrote {written:,} {kind_.value} rows to {target}", highlight=False)


def _to_file(
    target: Path,
    total: int,
    label: str,
    read: Callable[[], AbstractContextManager[Session]],
    kind: exports.ExportKind,
    user: int | None,
    since: datetime | None,
    until: datetime | None,
) -> int:
    """Write the export to ``target`` through a temporary file beside it, renamed into place
    when complete, with a progress bar (rows written / ``total``) on stderr; return the rows
    written."""
    partial_path = target.with_name(target.name + ".part")
    written = 0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task(f"export {label}", total=total)

        def advance(rows: int) -> None:
            nonlocal written
            written += rows
            progress.update(task, completed=written, total=max(total, written))

        chunks = exports.export_csv(
            read, kind, user_id=user, since=since, until=until, on_page=advance
        )
        try:
            with partial_path.open("w", encoding="utf-8", newline="") as file:
                for chunk in chunks:
                    file.write(chunk)
            os.replace(partial_path, target)
        except BaseException as exc:
            partial_path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise fail(f"cannot write {target}: {exc.strerror or exc}") from None
            raise
    return written


def register(app: typer.Typer) -> None:
    app.command()(export)
