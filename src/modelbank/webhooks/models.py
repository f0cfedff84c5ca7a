"""Webhook tables: endpoints, the outbox of events, deliveries and their attempt log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime


class DeliveryStatus(StrEnum):
    """Where a delivery stands (``webhook_deliveries.status``)."""

    PENDING = "pending"
    """Not yet delivered; sent when ``next_attempt_at`` is due."""
    DELIVERED = "delivered"
    """A 2xx answer was received (final)."""
    FAILED = "failed"
    """Given up: too many failed attempts, or the endpoint was disabled (final)."""


class WebhookEndpoint(Base):
    """A receiver registered by an admin. ``events`` is a JSON list of event-type patterns
    (``wallet.low_balance``, ``payout.*``, ``*``); ``secret_encrypted`` is the Fernet token
    of the ``whsec_…`` signing secret (:mod:`modelbank.secrets`), never the secret itself.
    A disabled endpoint (``is_active`` false, ``disabled_at`` set) gets no new deliveries."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class OutboxEvent(Base):
    """An event, written in the transaction of the change it reports. ``message_id``
    (``msg_`` + 32 random hex digits) is the ``webhook-id`` every endpoint receives for it,
    the same on every retry, so receivers can de-duplicate; random rather than ``msg_<id>``
    so that a rebuilt database never reuses an id a receiver has already seen."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event to one endpoint. ``status``: ``pending`` (due at ``next_attempt_at``),
    ``delivered`` or ``failed`` (final; ``next_attempt_at`` NULL). ``attempts`` counts the
    times a job claimed it for sending; ``last_*`` repeat the newest attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # the job's query: pending rows in due order
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        # the delivery log of one endpoint, newest first
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_event", "event_id"),
    )


class WebhookAttempt(Base):
    """The delivery log: one row per HTTP attempt. ``status_code`` is NULL when no response
    came (``error`` says why: timeout, connection refused…); ``duration_ms`` is wall time."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)


webhook_endpoints_table = cast(Table, WebhookEndpoint.__table__)
"""Core table of :class:`WebhookEndpoint`."""
outbox_events_table = cast(Table, OutboxEvent.__table__)
"""Core table of :class:`OutboxEvent`."""
webhook_deliveries_table = cast(Table, WebhookDelivery.__table__)
"""Core table of :class:`WebhookDelivery`."""
webhook_attempts_table = cast(Table, WebhookAttempt.__table__)
"""Core table of :class:`WebhookAttempt`."""
