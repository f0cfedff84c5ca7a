"""The Typer application; commands register themselves from their modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="modelbank",
    help="modelbank: a credit economy for AI model platforms (double-entry ledger, pricing,"
    " metering, creator earnings).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from modelbank.cli import backup as backup_command  # noqa: E402
from modelbank.cli import demo, jobs, keys, migrate, replay, serve, verify  # noqa: E402
from modelbank.cli import export as export_command  # noqa: E402
from modelbank.cli import fake_upstream as fake_upstream_command  # noqa: E402
from modelbank.cli import pool as pool_command  # noqa: E402
from modelbank.cli import rollups as rollups_command  # noqa: E402

migrate.register(app)
verify.register(app)
replay.register(app)
demo.register(app)
serve.register(app)
keys.register(app)
jobs.register(app)
rollups_command.register(app)
export_command.register(app)
pool_command.register(app)
fake_upstream_command.register(app)
backup_command.register(app)
