"""The FastAPI application factory (DESIGN §11–§12)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy import Engine

from modelbank import __version__
from modelbank.api import errors
from modelbank.api.audit_scope import AuditScopeMiddleware
from modelbank.api.deps import Database, KeyCache
from modelbank.api.gateway import create_gateway_app
from modelbank.api.guards import Guard
from modelbank.api.observe import RequestObserver, install_metrics
from modelbank.api.routes import admin, health, models, usage, users
from modelbank.api.routes import analytics as analytics_routes
from modelbank.api.routes import audit as audit_routes
from modelbank.api.routes import autotopup as autotopup_routes
from modelbank.api.routes import exports as export_routes
from modelbank.api.routes import marketplace as marketplace_routes
from modelbank.api.routes import payouts as payout_routes
from modelbank.api.routes import plans as plan_routes
from modelbank.api.routes import pool as pool_routes
from modelbank.api.routes import stakes as stake_routes
from modelbank.api.routes import wallets as wallet_routes
from modelbank.api.routes import webhooks as webhook_routes
from modelbank.api.routes import whatif as whatif_routes
from modelbank.config import Settings, load_settings
from modelbank.db import rls
from modelbank.db.engine import make_engine, read_session_factory, session_factory
from modelbank.db.migrate import current_revision, head_revision, upgrade
from modelbank.gateway.service import Gateway, GatewaySettings
from modelbank.gateway.upstream import Timeouts, Upstream
from modelbank.jobs import JobRunner
from modelbank.metering.group import GroupCommitter
from modelbank.observability.metrics import DatabaseCollector
from modelbank.pool.health import health_store
from modelbank.pool.router import Router
from modelbank.ratelimits.service import KeyLimits, Limiter
from modelbank.ratelimits.store import DatabaseStore, MemoryStore, RedisStore, Store
from modelbank.secrets import SecretBox, bind_deployment_key

DESCRIPTION = """\
modelbank's HTTP API: a double-entry credit ledger, model catalog and pricing, usage metering
and creator earnings.

* Authenticate with `Authorization: Bearer <API key>`; roles `admin`, `service` (the operator's
  backend, acting for any user) and `user` (only its own resources).
* Amounts are integers in micro-credits (`*_ucr`, 1 credit = 1,000,000 µcr) with a display
  string beside them; provider costs in micro-dollars (`*_uusd`).
* Every POST that moves credits takes an `Idempotency-Key` header: a retry with the same key
  and body returns the first response with `Idempotency-Hit: true`; another body gets 409.
* Errors are RFC 9457 `application/problem+json` with a stable `code`.
"""


class SchemaBehind(RuntimeError):
    """The database is behind the code's schema and migrations on start are disabled."""


_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)
"""FastAPI's built-in OpenTelemetry hooks, off: modelbank exports no traces, and checking
for a configured provider on every request cost ~6 % of a usage request (py-spy, bench
http_api). FastAPI versions without the option get nothing."""


def build_gateway(db: Database, box: SecretBox) -> Gateway:
    """The gateway of this process: a router over the pool (health shared through the
    database, or Redis when configured) and one pooled HTTP client to the upstreams."""
    settings = db.settings
    router = Router(db.reads, health_store(settings, db.engine), box, settings)
    upstream = Upstream(timeouts=Timeouts(first_byte=settings.gateway_first_byte_timeout_s))
    return Gateway(
        db.writes,
        router,
        upstream,
        GatewaySettings(
            hold_timeout_s=settings.gateway_hold_timeout_s,
            output_cap=settings.gateway_max_output_tokens,
        ),
    )


def build_limiter(db: Database) -> Limiter | None:
    """The rate limiter of this process (None unless ``MODELBANK_RATE_LIMITS``): counters in
    Redis when configured, else in memory on SQLite (one server process) and in the database
    on PostgreSQL (shared by the processes), unless ``MODELBANK_RATE_LIMIT_STORE`` says."""
    settings = db.settings
    if not settings.rate_limits:
        return None
    kind = settings.rate_limit_store
    if kind == "auto":
        kind = (
            "redis"
            if settings.redis_url
            else ("database" if db.engine.dialect.name == "postgresql" else "memory")
        )
    store: Store
    if kind == "redis":
        if not settings.redis_url:
            raise ValueError("MODELBANK_RATE_LIMIT_STORE=redis needs MODELBANK_REDIS_URL")
        store = RedisStore(settings.redis_url)
    elif kind == "database":
        store = DatabaseStore(db.writes)
    else:
        store = MemoryStore()
    keys = KeyLimits(settings.rate_limit_key_requests_per_s, settings.rate_limit_key_tokens_per_min)
    return Limiter(store, db.reads, keys, plan_ttl_s=settings.rate_limit_plan_cache_s)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the app on ``settings`` (default: from the environment).

    Applies pending migrations when ``settings.migrate_on_start`` (the default); otherwise
    raises :class:`SchemaBehind` when the database is not at the newest revision.
    """
    settings = settings or load_settings()
    engine = engine or make_engine(settings.database_url)
    if settings.migrate_on_start:
        upgrade(engine)
    else:
        current, head = current_revision(engine), head_revision()
        if current != head:
            raise SchemaBehind(
                f"database schema is at {current or 'nothing'}, this modelbank needs {head}:"
                " run `modelbank migrate` (or set MODELBANK_MIGRATE_ON_START=true)"
            )
    db = Database(
        engine=engine,
        writes=session_factory(engine),
        reads=read_session_factory(engine),
        settings=settings,
        keys=KeyCache(settings.auth_cache_ttl_s),
    )

    if settings.read_database_url:
        db.replica = read_session_factory(make_engine(settings.read_database_url))
    db.limiter = build_limiter(db)
    db.rls = rls.available(engine)
    box = SecretBox.from_settings(settings)
    bind_deployment_key(box, engine)  # one key per deployment: refuses to start with another
    gateway = build_gateway(db, box)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.group_commit:
            db.committer = GroupCommitter(db.writes, max_wait_s=settings.group_commit_wait_s)
        runner = None
        if settings.jobs_interval_s > 0:
            runner = JobRunner(db.writes, app.state.secret_box, settings.jobs_interval_s, settings)
        try:
            yield
        finally:
            await gateway.router.aclose()  # writes the health still pending
            await gateway.upstream.aclose()
            if runner is not None:
                runner.close()
            if db.committer is not None:
                db.committer.close(timeout=30)
                db.committer = None

    app = FastAPI(
        lifespan=lifespan,
        title="modelbank",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        **_NO_TELEMETRY,
    )
    app.state.db = db
    app.state.secret_box = box  # webhook secrets and provider keys at rest
    app.state.gateway = gateway
    errors.install(app)
    # innermost: the audit scope takes the RequestObserver's request id
    app.add_middleware(AuditScopeMiddleware)
    # Guard inside the observer: its 413s and 500s are counted and logged with the same id
    app.add_middleware(Guard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestObserver, log_requests=settings.log_requests)
    install_metrics(
        app,
        DatabaseCollector(engine),
        settings.metrics_token.get_secret_value() if settings.metrics_token else None,
    )
    for module in (health, users, models, usage, admin):
        app.include_router(module.router)
    app.include_router(wallet_routes.router)
    app.include_router(autotopup_routes.router)
    app.include_router(plan_routes.router)
    app.include_router(analytics_routes.router)
    app.include_router(payout_routes.router)
    app.include_router(webhook_routes.router)
    app.include_router(stake_routes.router)
    app.include_router(export_routes.router)
    app.include_router(pool_routes.router)
    app.include_router(whatif_routes.router)
    app.include_router(marketplace_routes.router)
    app.include_router(audit_routes.router)
    from modelbank.web import create_web_app  # imported here: the dashboard imports the API

    app.mount("/app", create_web_app(db, app.state.secret_box))
    app.mount("/v1", create_gateway_app(db, gateway))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.problem_media_type(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    # request bodies in validation mode (a defaulted field is optional),
                    # responses in serialization mode: typed clients get both right
                    separate_input_output_schemas=True,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
