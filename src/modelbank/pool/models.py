"""Resource pool tables (DESIGN §9): deposited provider keys, the models each serves, their
shared health and breaker state, the route log of every gateway request, and the debts a
clawback leaves when the depositor's wallet no longer holds the credit.

Money columns: ``*_ucr`` micro-credits, ``*_uusd`` micro-dollars, all integers. Latencies in
milliseconds (floats: they are measurements, not money).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime

RESOURCE_STATUSES = ("pending", "active", "depleted", "suspended", "withdrawn", "failed")
"""pending (probe not passed yet) → active → depleted (quota used) / suspended (breaker or
admin) / withdrawn (by the depositor) / failed (permanently: the key was refused)."""

LIVE_STATUSES = ("pending", "active", "depleted", "suspended")
"""Statuses in which a key is still in the pool: one live resource per key fingerprint."""


class Resource(Base):
    """A provider API key in the pool. ``owner_id`` NULL: a platform resource (the operator's
    own key, no deposit credit). The key is stored only encrypted (``key_encrypted`` under
    the Fernet key ``key_id``); ``key_mask`` and ``key_fingerprint`` are what is shown.

    Quota: ``quota_uusd`` of provider spend in all, of which ``market_quota_uusd`` is sold
    through marketplace listings (never credited at deposit); the pool part is the rest.
    ``consumed_uusd`` is provider spend through the pool part. Deposit accounting, per
    resource: ``deposit_credit_ucr − moved_credit_ucr`` = consumed share + ``clawed_back_ucr``
    + outstanding."""

    __tablename__ = "resources"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    provider: Mapped[str] = mapped_column(String(64))
    base_url: Mapped[str] = mapped_column(String(500))
    key_encrypted: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(32))
    key_mask: Mapped[str] = mapped_column(String(32))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    quota_uusd: Mapped[int] = mapped_column(BigInteger)
    market_quota_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    consumed_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    deposit_credit_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    """Credited to the depositor's wallet at activation (a ``deposit`` grant)."""
    fee_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    """Taken by the platform at activation (``pool_deposits`` → ``platform_fees``)."""
    clawed_back_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    """Deposit credit reversed on withdrawal or permanent failure (wallet plus debt)."""
    moved_credit_ucr: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Deposit credit reversed because its quota moved from the pool part to the market part
    (DESIGN §10: no quota is paid for twice); ``deposit − moved`` is the credit of the
    current pool part."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        CheckConstraint(
            "quota_uusd > 0 AND market_quota_uusd >= 0 AND market_quota_uusd <= quota_uusd"
            " AND consumed_uusd >= 0 AND deposit_credit_ucr >= 0 AND fee_ucr >= 0"
            " AND clawed_back_ucr >= 0 AND clawed_back_ucr <= deposit_credit_ucr",
            name="resource_amounts",
        ),
        Index("ix_resources_owner", "owner_id", "id"),
        Index(
            "uq_resources_live_key",
            "key_fingerprint",
            unique=True,
            sqlite_where=text("status IN ('pending', 'active', 'depleted', 'suspended')"),
            postgresql_where=text("status IN ('pending', 'active', 'depleted', 'suspended')"),
        ),
    )


class ResourceModel(Base):
    """A catalog model a resource serves, under the upstream's own model name."""

    __tablename__ = "resource_models"

    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    upstream_model: Mapped[str] = mapped_column(String(200))

    __table_args__ = (Index("ix_resource_models_model", "model_id", "resource_id"),)


class ResourceHealth(Base):
    """Health and circuit breaker of one resource, shared by every API process (DESIGN §9).
    ``breaker``: closed → open (``opened_at``) → half_open (one probe in flight) → closed.
    ``success_rate`` is an EWMA of outcomes (1 success, 0 failure) over roughly the last
    ``window`` requests; latencies are EWMAs in milliseconds."""

    __tablename__ = "resource_health"

    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"), primary_key=True)
    breaker: Mapped[str] = mapped_column(String(16), default="closed")
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    ewma_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    ewma_ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    success_rate: Mapped[float] = mapped_column(Float, default=1.0)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RouteLog(Base):
    """One gateway request: who asked for which model, the candidates and their scores, each
    attempt's outcome, the resource that served it, the hold and the usage it charged.
    Prompts are never stored here."""

    __tablename__ = "route_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    """chat, embeddings, images."""
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    candidates: Mapped[list[Any]] = mapped_column(JSON)
    attempts: Mapped[list[Any]] = mapped_column(JSON)
    resource_id: Mapped[int | None] = mapped_column(ForeignKey("resources.id"), nullable=True)
    outcome: Mapped[str] = mapped_column(String(32))
    """served, failed (every attempt), no_route, rejected (hold refused), disconnected."""
    hold_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    usage_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    charge_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_uusd: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_route_logs_resource", "resource_id", "id"),
        Index("ix_route_logs_user", "user_id", "id"),
    )


class PoolDebt(Base):
    """Deposit credit a clawback could not take back because the depositor's wallet no
    longer held it; collected from the depositor's later credits (``remaining_ucr`` → 0)."""

    __tablename__ = "pool_debts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    resource_id: Mapped[int] = mapped_column(ForeignKey("resources.id"))
    amount_ucr: Mapped[int] = mapped_column(BigInteger)
    remaining_ucr: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "amount_ucr > 0 AND remaining_ucr >= 0 AND remaining_ucr <= amount_ucr",
            name="pool_debt_amounts",
        ),
        Index("ix_pool_debts_user", "user_id", "id"),
    )


resources_table = cast(Table, Resource.__table__)
resource_models_table = cast(Table, ResourceModel.__table__)
resource_health_table = cast(Table, ResourceHealth.__table__)
route_logs_table = cast(Table, RouteLog.__table__)
pool_debts_table = cast(Table, PoolDebt.__table__)
