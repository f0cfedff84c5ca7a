"""``modelbank serve``: run the HTTP API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from modelbank.cli.common import DB_OPTION_HELP, cli_errors, fail, settings_for


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    db: Annotated[str | None, typer.Option(help=DB_OPTION_HELP)] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Serve the API (OpenAPI at /openapi.json, docs at /docs).

    One worker process with uvloop: SQLite has one writer, so more processes would only
    queue on its lock.

    Example: modelbank serve --port 8000 --db postgresql://postgres@127.0.0.1:5432/modelbank
    """
    import uvicorn

    from modelbank.api.app import SchemaBehind, create_app
    from modelbank.observability import logs

    logs.configure(log_level)
    with cli_errors():
        settings = settings_for(db)
        try:
            app = create_app(settings)
        except SchemaBehind as exc:
            raise fail(str(exc)) from None
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        log_config=None,  # our JSON lines (modelbank.observability.logs), not uvicorn's text
        loop="auto",
        http="auto",
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
