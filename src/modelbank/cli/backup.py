"""``modelbank backup PATH`` and ``modelbank restore PATH``, each followed by ``verify
--chain`` (issue 16 part 6; the runbook is in the README)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from modelbank.cli.common import DB_OPTION_HELP, cli_errors, console, fail, settings_for
from modelbank.cli.verify import Findings, check, report
from modelbank.db import backup as backups
from modelbank.db.engine import make_engine, session_factory, transaction
from modelbank.db.migrate import current_revision

_SECRET_NOTE = (
    "[dim]The secret key (MODELBANK_SECRET_KEY or its key file) is not in the backup: keep"
    " it beside it, or webhook secrets and pool keys cannot be decrypted after a restore.[/]"
)


def _check_url(url: str) -> Findings:
    engine = make_engine(url)
    try:
        if current_revision(engine) is None:
            raise fail(f"{url}: no modelbank schema (not a modelbank database)", 1)
        with transaction(session_factory(engine)) as session:
            return check(session, with_chain=True)
    finally:
        engine.dispose()


def backup(
    path: Annotated[Path, typer.Argument(help="File to write (replaced if it exists).")],
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
) -> None:
    """Back up the whole database to PATH, then verify the backup (ledger invariants and
    hash chains): exit 0 when it is sound, 1 naming what is broken, 2 when it failed.

    SQLite: the online backup API (a consistent copy of a live database: PATH is itself a
    SQLite database). PostgreSQL: pg_dump's custom format, from a snapshot that the
    verification reads too; a URL whose options set a search_path dumps that schema only.
    Record the chain heads it prints: after a restore, verify prints them again.

    Example: modelbank backup /var/backups/modelbank-$(date +%F).db
    """
    with cli_errors():
        url = settings_for(db).database_url
        path = path.expanduser().resolve()
        if backups.backend(url) == "sqlite":
            backups.sqlite_copy(backups.sqlite_path(url), path)
            found = _check_url(f"sqlite:///{path}")
        else:
            engine = make_engine(url)

            def verify_snapshot(conn: Connection) -> Findings:
                with Session(bind=conn) as session:
                    return check(session, with_chain=True)

            try:
                found = backups.pg_dump_snapshot(engine, url, path, verify_snapshot)
            finally:
                engine.dispose()
    console.print(f"backup written: {path} ({backups.describe(path.stat().st_size)})")
    console.print(_SECRET_NOTE)
    report(found)


def restore(
    path: Annotated[Path, typer.Argument(help="A file made by `modelbank backup`.")],
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask before replacing the database.")
    ] = False,
) -> None:
    """Replace the database with the backup at PATH, then verify it (ledger invariants and
    hash chains): exit 0 when sound, 1 naming what is broken, 2 when the restore failed.

    Stop every server and job runner first. SQLite: the file is overwritten page by page
    with the online backup API. PostgreSQL: pg_restore drops the backup's objects where
    they exist and recreates them, in one transaction (all or nothing); a fresh database
    or schema works too. Compare the chain heads it prints with those the backup printed.

    Example: modelbank restore /var/backups/modelbank-2026-12-06.db --yes
    """
    with cli_errors():
        url = settings_for(db).database_url
        path = path.expanduser().resolve()
        if not path.is_file():
            raise fail(f"no backup file at {path}")
        if not yes:
            typer.confirm(f"Replace the database {url} with {path}?", abort=True)
        if backups.backend(url) == "sqlite":
            if backups.is_pg_dump(path):
                raise fail(f"{path} is a PostgreSQL dump; restore it into a PostgreSQL URL")
            if backups.sqlite_revision(path) is None:
                raise fail(f"{path} is not a modelbank backup (no SQLite modelbank schema)")
            backups.sqlite_copy(path, backups.sqlite_path(url))
        else:
            if not backups.is_pg_dump(path):
                raise fail(f"{path} is not a modelbank backup (not a pg_dump archive)")
            backups.pg_restore(url, path)
        found = _check_url(url)
    console.print(f"restored {path} into the database")
    report(found)


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
