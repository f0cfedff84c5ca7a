"""``modelbank verify``: check the ledger invariants (DESIGN §3)."""

from __future__ import annotations

from typing import Annotated

import typer

from modelbank.cli.common import DB_OPTION_HELP, cli_errors, console, err_console, settings_for
from modelbank.db.engine import make_engine, session_factory, transaction
from modelbank.db.migrate import current_revision
from modelbank.ledger import invariants
from modelbank.marketplace import invariants as market_invariants
from modelbank.pool import invariants as pool_invariants
from modelbank.wallets import grants


def verify(db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None) -> None:
    """Check the ledger's invariants: exit 0 when all hold, 1 naming the broken one.

    The invariants: balanced, cached totals = transfers, no flagged account negative,
    holds resolved once, every wallet's grants sum to its balance, every pool resource's
    deposit credit = consumed share + clawed back + outstanding, every marketplace order's
    released to seller + commission + returned = paid (nothing in escrow once closed).

    Example: modelbank verify --db sqlite:///./modelbank.db
    """
    with cli_errors():
        settings = settings_for(db)
        engine = make_engine(settings.database_url)
        if current_revision(engine) is None:
            engine.dispose()
            err_console.print(
                "error: the database has no modelbank schema; run `modelbank migrate`"
            )
            raise typer.Exit(2)
        with transaction(session_factory(engine)) as session:
            violations: list[object] = [*invariants.check(session)]
            violations.extend(
                f"wallet of user {v.user_id}: balance {v.balance_ucr} µcr,"
                f" grants {v.grants_ucr} µcr"
                if v.balance_ucr >= 0
                else f"grant {v.user_id}: {v.grants_ucr} µcr used but burns do not add up"
                for v in grants.check(session)
            )
            violations.extend(pool_invariants.check(session))
            violations.extend(market_invariants.check(session))
        engine.dispose()
    if violations:
        for violation in violations:
            err_console.print(f"[bold red]broken:[/] {violation}", highlight=False)
        raise typer.Exit(1)
    console.print(
        "[green]ledger ok[/]: balanced, totals match transfers, no negative"
        " flagged account, holds resolved once, grants sum to wallet balances, pool"
        " deposits accounted for, marketplace escrow accounted for"
    )


def register(app: typer.Typer) -> None:
    app.command()(verify)
