"""``modelbank serve``: run the HTTP API with uvicorn (one process, or ``--workers N`` on
PostgreSQL)."""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from typing import Annotated, Any

import typer

from modelbank.cli.common import DB_OPTION_HELP, cli_errors, fail, settings_for

LOG_LEVEL_ENV = "MODELBANK_LOG_LEVEL"
"""How ``serve`` tells its worker processes the log level."""

MAX_WORKERS = 64

WORKER_START_TIMEOUT_S = 120
"""How long uvicorn waits for a worker's health answer before killing it (it answers only
once its imports are done: 5 s, uvicorn's default, killed every worker in a loop on this
2-core machine under load)."""

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
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_WORKERS,
            help="Worker processes on the one port (PostgreSQL only: SQLite has one writer)",
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="Log level (JSON lines on stderr)")] = "info",
    access_log: Annotated[bool, typer.Option(help="uvicorn's own access log too")] = False,
) -> None:
    """Serve the API (OpenAPI at /openapi.json, docs at /docs, metrics at /metrics).

    One process with uvloop by default. ``--workers N`` runs N uvicorn worker processes on
    the port, each with its own pool and group committer, sharing the PostgreSQL database
    (router health, rate limits and every balance live there); migrations run once, before
    the workers start, and /metrics sums the workers' counters.

    Example: modelbank serve --port 8000 --workers 4 --db postgresql://postgres@127.0.0.1/modelbank
    """
    import uvicorn

    from modelbank.observability import logs

    logs.configure(log_level)
    with cli_errors():
        settings = settings_for(db)
        if workers > 1:
            _serve_workers(
                settings.database_url,
                settings.migrate_on_start,
                host,
                port,
                workers,
                log_level,
                access_log,
            )
            return
        from modelbank.api.app import SchemaBehind, create_app

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
        log_config=None,  # our JSON lines (modelbank.observability.logs), not uvicorn's text
        loop="auto",
        http="auto",
    )


def _serve_workers(
    url: str,
    migrate: bool,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log: bool,
) -> None:
    """Migrate (or check) once, then hand over to uvicorn's process manager; the workers
    build the app from the environment (:func:`worker_app`)."""
    import uvicorn

    from modelbank.db.engine import make_engine
    from modelbank.db.migrate import current_revision, head_revision, upgrade

    engine = make_engine(url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        raise fail(
            "--workers needs PostgreSQL: SQLite has one writer, so run one process (--workers 1)"
        )
    if migrate:
        upgrade(engine)
    elif current_revision(engine) != head_revision():
        raise fail(f"database schema is behind ({current_revision(engine)}): run modelbank migrate")
    engine.dispose()
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="modelbank-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ.update(
        {
            "MODELBANK_DATABASE_URL": url,
            "MODELBANK_MIGRATE_ON_START": "false",  # done above, once
            LOG_LEVEL_ENV: log_level,
        }
    )
    # workers are new interpreters: glibc reads the arena cap from the environment at start
    os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
    try:
        uvicorn.run(
            "modelbank.cli.serve:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
            log_config=None,
            # a worker imports modelbank and builds its app before answering uvicorn's
            # health ping: seconds on a busy machine, past uvicorn's default of 5
            timeout_worker_healthcheck=WORKER_START_TIMEOUT_S,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """The app of one ``--workers`` process: settings from the environment, JSON logs."""
    from modelbank.api.app import create_app
    from modelbank.observability import logs

    logs.configure(os.environ.get(LOG_LEVEL_ENV, "info"))
    return create_app()


def register(app: typer.Typer) -> None:
    app.command()(serve)
