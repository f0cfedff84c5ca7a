"""``modelbank keys``: create and revoke API keys from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from modelbank.auth import service as auth
from modelbank.cli.common import DB_OPTION_HELP, cli_errors, console, migrated_engine, settings_for
from modelbank.db.engine import session_factory, transaction

keys_app = typer.Typer(help="Create and revoke API keys.", no_args_is_help=True)


@keys_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="admin, service or user")] = "admin",
    user: Annotated[int | None, typer.Option(help="The user of a user key")] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    limit_ucr: Annotated[
        int | None, typer.Option(help="A user key's spend limit per period (µcr)")
    ] = None,
    limit_period: Annotated[
        str | None, typer.Option(help="day, week, month (UTC) or never (default)")
    ] = None,
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
) -> None:
    """Create a key and print it as the last line of stdout (shown once; stored hashed).

    Example: modelbank keys create --role user --user 41 --limit-ucr 5000000 --limit-period
    day | tail -1
    """
    with cli_errors():
        engine = migrated_engine(settings_for(db))
        with transaction(session_factory(engine)) as session:
            key = auth.create_key(
                session,
                role,
                user_id=user,
                name=name,
                limit_ucr=limit_ucr,
                limit_period=limit_period,
            )
        engine.dispose()
    console.print(
        f"created {key.role.value} key {key.id} ({key.prefix}…); store it now, it is not"
        " shown again:",
        highlight=False,
    )
    print(key.secret)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id")],
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
) -> None:
    """Revoke a key (idempotent).

    Example: modelbank keys revoke 3
    """
    with cli_errors():
        engine = migrated_engine(settings_for(db))
        with transaction(session_factory(engine)) as session:
            auth.revoke_key(session, key_id)
        engine.dispose()
    console.print(f"key {key_id} revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
