"""``modelbank serve``: run the HTTP API with uvicorn."""

from __future__ import annotations

import ctypes
import os
from typing import Annotated

import typer

from modelbank.cli.common import DB_OPTION_HELP, cli_errors, fail, settings_for

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the most malloc arenas (malloc.h)."""
MALLOC_ARENAS = 2
"""Arenas the server may use. glibc gives threads that allocate at once their own arena (up to
8 × cores); the request thread pool then holds memory in many half-empty arenas and RSS
creeps up under mixed load (issue 16 D12: bench/memory.py, 90 s of mixed load on SQLite,
RSS still rising by ~1 MiB per 10 s with the default, flat at 160 MiB with 2 arenas)."""


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at :data:`MALLOC_ARENAS` for this process, unless the
    operator set ``MALLOC_ARENA_MAX``; a no-op where glibc is absent."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return


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

    with cli_errors():
        settings = settings_for(db)
        try:
            app = create_app(settings)
        except SchemaBehind as exc:
            raise fail(str(exc)) from None
    limit_malloc_arenas()  # before uvicorn starts the threads that allocate
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        loop="auto",
        http="auto",
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
