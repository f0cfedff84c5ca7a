"""What every command shares: settings, the database, one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from modelbank.audit import context as audit_context
from modelbank.config import Settings, load_settings
from modelbank.db.engine import make_engine
from modelbank.db.migrate import upgrade
from modelbank.errors import DomainError

console = Console()
err_console = Console(stderr=True)

DB_OPTION_HELP = "Database URL (default: $MODELBANK_DATABASE_URL or sqlite:///./modelbank.db)"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on one line to stderr; return the Exit to raise."""
    # The message is plain text: escaped, so "[user_not_found]" is not read as markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn domain and database errors into one line and exit status 2."""
    try:
        yield
    except DomainError as exc:
        raise fail(f"{exc} [{exc.code}]") from None
    except OperationalError as exc:
        raise fail(f"database error: {exc.orig}") from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


def settings_for(db: str | None) -> Settings:
    """Settings from the environment with the ``--db`` override. (Every command starts
    here: what it changes is audited as done by ``cli``.)"""
    audit_context.act_as(audit_context.Actor("cli"))
    return load_settings(database_url=db)


def migrated_engine(settings: Settings) -> Engine:
    """An engine on the configured database, upgraded to the newest schema."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return engine
