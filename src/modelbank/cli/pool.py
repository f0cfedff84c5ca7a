"""``modelbank pool``: operator commands for the resource pool (DESIGN §9)."""

from __future__ import annotations

from typing import Annotated

import typer

from modelbank.cli.common import DB_OPTION_HELP, cli_errors, console, migrated_engine, settings_for
from modelbank.db.engine import session_factory, transaction
from modelbank.pool import rotation
from modelbank.secrets import SecretBox, bind_deployment_key

pool_app = typer.Typer(
    help="Operate the resource pool of deposited provider keys.", no_args_is_help=True
)


@pool_app.command("rotate-keys")
def rotate_keys(db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None) -> None:
    """Re-encrypt every provider key under the current MODELBANK_SECRET_KEY.

    Keys sealed with an older key are read through MODELBANK_SECRET_KEYS_PREVIOUS
    (comma-separated); once this reports 0 left, the old keys can be removed from that
    setting. Idempotent.

    Example: MODELBANK_SECRET_KEYS_PREVIOUS=<old key> modelbank pool rotate-keys
    """
    with cli_errors():
        settings = settings_for(db)
        box = SecretBox.from_settings(settings)
        engine = migrated_engine(settings)
        bind_deployment_key(box, engine)  # a rotation moves the registration
        factory = session_factory(engine)
        total = 0
        while True:
            with transaction(factory) as session:
                done = rotation.rotate_keys(session, box)
            total += done
            if done < rotation.ROTATE_BATCH:
                break
        engine.dispose()
    console.print(f"re-sealed {total} provider keys under secret key {box.key_id()}; 0 left")


def register(app: typer.Typer) -> None:
    app.add_typer(pool_app, name="pool")
