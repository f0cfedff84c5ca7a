"""Settings: one pydantic-settings object, built once by the entry point and passed in.

Environment variables are prefixed ``MODELBANK_`` (``MODELBANK_DATABASE_URL`` …).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelbank.money import DEFAULT_CREDITS_PER_USD


def _default_data_dir() -> Path:
    # ../shared/data beside the working directory or the checkout (the project's layout);
    # elsewhere ./data.
    here = Path.cwd()
    checkout = Path(__file__).resolve().parents[3]  # src/modelbank/config.py → checkout's parent
    for candidate in (here / ".." / "shared" / "data", checkout / "shared" / "data", here / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return (here / "data").resolve()


class Settings(BaseSettings):
    """modelbank's configuration."""

    model_config = SettingsConfigDict(env_prefix="MODELBANK_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./modelbank.db",
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql://user@host/db",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder with the real traces and price sheet (../shared/data by default)",
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
    migrate_on_start: bool = Field(
        default=True,
        description="`modelbank serve` applies pending migrations on start; when false it"
        " refuses to start on a database that is behind",
    )


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides (CLI options)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]


__all__ = ["Settings", "load_settings"]
