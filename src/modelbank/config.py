"""Settings: one pydantic-settings object, built once by the entry point and passed in.

Environment variables are prefixed ``MODELBANK_`` (``MODELBANK_DATABASE_URL`` …).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelbank.data import PACKAGED_DATA_DIR
from modelbank.money import DEFAULT_CREDITS_PER_USD


class Settings(BaseSettings):
    """modelbank's configuration."""

    model_config = SettingsConfigDict(env_prefix="MODELBANK_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./modelbank.db",
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql://user@host/db",
    )
    read_database_url: str | None = Field(
        default=None,
        description="A read replica of database_url (streaming replication): dashboards,"
        " analytics and exports read there; unset: everything reads the primary",
    )
    data_dir: Path = Field(
        default=PACKAGED_DATA_DIR,
        description="Folder with the real traces and price sheet, plain or gzipped (default:"
        " the data shipped inside the package, src/modelbank/data)",
    )
    credits_per_usd: Decimal = Field(default=DEFAULT_CREDITS_PER_USD, gt=0)
    group_commit: bool = Field(
        default=True,
        description="`serve` charges single usage events through a group committer: events"
        " arriving together share one transaction (DESIGN §16)",
    )
    group_commit_wait_s: float = Field(
        default=0.0,
        ge=0,
        le=0.1,
        description="How long (seconds) the oldest queued event waits for company; 0 charges"
        " what is queued at once (batches still form while a commit runs)",
    )
    auth_cache_ttl_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Seconds an authenticated API key is remembered in the server process"
        " (0: look every request up); a key revoked elsewhere may work this long",
    )
    jobs_interval_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="`serve` runs the background jobs (expire holds, sweep expired grants,"
        " deliver webhooks) every this many seconds in-process; 0 (default) leaves them to"
        " `modelbank jobs run`",
    )
    gateway_hold_timeout_s: int = Field(
        default=3_600,
        ge=60,
        le=86_400,
        description="Life of a gateway request's hold (seconds): longer than any call, streams"
        " included; a hold never settled (the process died) expires and costs nothing",
    )
    gateway_max_output_tokens: int = Field(
        default=4_096,
        ge=1,
        le=1_000_000,
        description="Output tokens per choice the gateway allows when the caller sets no"
        " max_tokens (also capped at what the balance covers)",
    )
    gateway_first_byte_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="Seconds an upstream may take to start answering before the attempt fails over",
    )
    pool_private_upstreams: bool = Field(
        default=False,
        description="Let users deposit keys whose base URL is localhost or a private or"
        " link-local address (self-hosted upstreams, demos); off, such deposits are refused"
        " so that the gateway never calls into the operator's network for a user. Platform"
        " resources (admin) may always name any host",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest request body accepted (bytes; default 8 MiB: a full usage batch"
        " of 1,000 events with bounded metadata fits several times). A larger"
        " `Content-Length` is refused before the body is read, a chunked body as soon as it"
        " passes the limit: 413 problem+json `body_too_large`",
    )
    migrate_on_start: bool = Field(
        default=True,
        description="`modelbank serve` applies pending migrations on start; when false it"
        " refuses to start on a database that is behind",
    )
    stripe_secret_key: SecretStr | None = Field(
        default=None,
        description="Stripe secret API key (sk_live_…/sk_test_…); unset disables the `stripe`"
        " payment provider",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret (whsec_…) of the Stripe webhook endpoint"
        " POST /api/v1/webhooks/stripe; unset refuses every Stripe webhook",
    )
    manual_subscriptions_auto_renew: bool = Field(
        default=False,
        description="The jobs renew `manual` subscriptions whose period ended (the operator"
        " bills outside modelbank); false: an admin confirms each period",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL buyers' browsers reach modelbank at (Stripe Checkout success and"
        " cancel pages are built from it)",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key (32 url-safe base64-encoded bytes) that encrypts secrets at rest"
        " (webhook signing secrets); `python -c 'from cryptography.fernet import Fernet;"
        " print(Fernet.generate_key().decode())'` makes one. Unset: the key is read from"
        " `secret_key_file`, created on first use",
    )
    secret_keys_previous: SecretStr | None = Field(
        default=None,
        description="Earlier Fernet keys, comma-separated, still accepted to decrypt secrets"
        " after `secret_key` was rotated; `modelbank pool rotate-keys` re-encrypts the pool's"
        " provider keys under the current key, after which they can be dropped",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="File holding the Fernet key when `secret_key` is unset; created with mode"
        " 0600 on first use. Default: `modelbank.secret.key` beside the SQLite database file,"
        " or in the working directory for other databases. Back it up apart from the database:"
        " without it the stored secrets cannot be read",
    )
    # Router and breaker of the resource pool (DESIGN §9; modelbank.pool.scoring/breaker).
    router_weights: dict[str, float] = Field(
        default_factory=dict,
        description='Router score weights as JSON, e.g. {"latency": 2, "cost": 0}; terms: cost,'
        " latency, ttft, success, load, quota (absent ones keep their defaults)",
    )
    router_top_k: int = Field(
        default=2,
        ge=1,
        le=20,
        description="The first resource is picked at random among the"
        " best this many (load spreading)",
    )
    router_max_attempts: int = Field(
        default=3, ge=1, le=10, description="Resources tried per request (first + failovers)"
    )
    router_deadline_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="Total seconds the attempts of one request may"
        " take before the first byte reaches the client",
    )
    router_cache_ttl_s: float = Field(
        default=1.0,
        ge=0,
        le=5,
        description="Seconds a model's candidate list and their health"
        " are reused in-process before being read again (0: every request)",
    )
    router_health_flush_s: float = Field(
        default=0.1,
        ge=0,
        le=10,
        description="Seconds the router gathers attempts' health (in flight, outcomes,"
        " latencies) in-process before writing them to the shared store in one transaction;"
        " 0 writes each attempt's begin and end at once (two transactions per attempt)",
    )
    breaker_failure_threshold: int = Field(default=5, ge=1, le=1000)
    breaker_success_rate_floor: float = Field(default=0.5, ge=0, le=1)
    breaker_min_requests: int = Field(default=20, ge=0)
    breaker_window: int = Field(default=50, ge=1, le=100_000)
    breaker_cooldown_s: float = Field(default=30.0, ge=0, le=86_400)
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that may read GET /metrics (Prometheus' `authorization`"
        " setting) besides admin keys; unset: admin keys only",
    )
    log_requests: bool = Field(
        default=True,
        description="`serve` logs one JSON line per request (method, route, status,"
        " duration, request id) at INFO",
    )
    rate_limits: bool = Field(
        default=False,
        description="Enforce rate limits: per key (the two settings below) and per user by"
        " the plan of the wallet's balance (table rate_limit_plans); 429 with Retry-After",
    )
    rate_limit_store: Literal["auto", "memory", "database", "redis"] = Field(
        default="auto",
        description="Where the counters live: auto = Redis when redis_url is set, else memory"
        " on SQLite (one server process) and the database on PostgreSQL (shared by processes)",
    )
    rate_limit_key_requests_per_s: int = Field(
        default=0, ge=0, description="Requests per second of one API key (0: no key limit)"
    )
    rate_limit_key_tokens_per_min: int = Field(
        default=0,
        ge=0,
        description="Tokens (input + output, usage and gateway) per minute of one API key"
        " (0: no key limit)",
    )
    rate_limit_plan_cache_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Seconds a user's plan (by balance) is reused before the balance is read again",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db: the pool's shared health and breaker"
        " state live there instead of the database (several API processes or hosts)",
    )


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides (CLI options)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]


__all__ = ["Settings", "load_settings"]
