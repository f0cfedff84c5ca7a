"""``modelbank verify``: check the ledger invariants (DESIGN §3) and the hash chains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from modelbank import chain as chains
from modelbank.cli.common import DB_OPTION_HELP, cli_errors, console, err_console, settings_for
from modelbank.db import partitions
from modelbank.db.engine import make_engine, session_factory, transaction
from modelbank.db.migrate import current_revision
from modelbank.ledger import invariants
from modelbank.marketplace import invariants as market_invariants
from modelbank.pool import invariants as pool_invariants
from modelbank.wallets import grants

OK_LINE = (
    "[green]ledger ok[/]: balanced, totals match transfers, no negative"
    " flagged account, holds resolved once, grants sum to wallet balances, pool"
    " deposits accounted for, marketplace escrow accounted for, every reference to a"
    " transfer resolves"
)


@dataclass
class Findings:
    """What a check found: broken invariants and links (``violations``, empty when all
    hold) and each chain's report (when the chains were checked)."""

    violations: list[str] = field(default_factory=list)
    chains: list[chains.ChainReport] = field(default_factory=list)


def check(session: Session, *, with_chain: bool) -> Findings:
    """Every invariant ``modelbank verify`` checks, in ``session``'s snapshot; with
    ``with_chain`` also every hash chain's links."""
    found = Findings([str(v) for v in invariants.check(session)])
    found.violations.extend(
        f"wallet of user {v.user_id}: balance {v.balance_ucr} µcr, grants {v.grants_ucr} µcr"
        if v.balance_ucr >= 0
        else f"grant {v.user_id}: {v.grants_ucr} µcr used but burns do not add up"
        for v in grants.check(session)
    )
    found.violations.extend(str(v) for v in pool_invariants.check(session))
    found.violations.extend(str(v) for v in market_invariants.check(session))
    found.violations.extend(str(v) for v in partitions.dangling_references(session.connection()))
    if with_chain:
        found.chains = chains.verify_all(session)
        found.violations.extend(
            f"chain {r.chain}: {r.problem}" for r in found.chains if r.problem is not None
        )
    return found


def report(found: Findings) -> None:
    """Print ``found``; raise ``typer.Exit(1)`` when something is broken."""
    for r in found.chains:
        if r.ok:
            console.print(
                f"chain {r.chain} ok: {r.sealed} sealed in {r.blocks} blocks,"
                f" {r.unsealed} waiting for the sealer; head {r.head_hash}",
                highlight=False,
            )
    if found.violations:
        for violation in found.violations:
            err_console.print(f"[bold red]broken:[/] {violation}", highlight=False)
        raise typer.Exit(1)
    console.print(OK_LINE)


def verify(
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    chain: Annotated[
        bool,
        typer.Option(
            "--chain",
            help="Also recompute the hash chains of transfers and audit records and name"
            " the first bad link.",
        ),
    ] = False,
) -> None:
    """Check the ledger's invariants: exit 0 when all hold, 1 naming the broken one.

    The invariants: balanced, cached totals = transfers, no flagged account negative,
    holds resolved once, every wallet's grants sum to its balance, every pool resource's
    deposit credit = consumed share + clawed back + outstanding, every marketplace order's
    released to seller + commission + returned = paid (nothing in escrow once closed).

    With --chain, every sealed link of the transfers' and the audit log's hash chains is
    recomputed from the rows' content: a transfer changed after sealing (even with the
    account totals changed to match, so that the invariants still hold) is named. Rows
    written since the last `modelbank jobs run` are not sealed yet: they are counted, not
    checked. The chains' head hashes are printed: record them elsewhere to anchor them.

    Example: modelbank verify --chain --db sqlite:///./modelbank.db
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
            found = check(session, with_chain=chain)
        engine.dispose()
    report(found)


def register(app: typer.Typer) -> None:
    app.command()(verify)
