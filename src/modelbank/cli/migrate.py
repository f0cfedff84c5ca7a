"""``modelbank migrate``: upgrade the database to the newest schema (Alembic head)."""

from __future__ import annotations

from typing import Annotated

import typer

from modelbank.cli.common import DB_OPTION_HELP, cli_errors, console, settings_for
from modelbank.db.engine import make_engine
from modelbank.db.migrate import current_revision, head_revision, upgrade


def migrate(db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None) -> None:
    """Apply every pending migration (alembic upgrade head).

    Example: modelbank migrate --db postgresql://postgres@127.0.0.1:5432/modelbank
    """
    with cli_errors():
        settings = settings_for(db)
        engine = make_engine(settings.database_url)
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
        engine.dispose()
    console.print(
        f"database at revision [bold]{after}[/] (head {head_revision()}; was {before or 'empty'})"
    )


def register(app: typer.Typer) -> None:
    app.command()(migrate)
