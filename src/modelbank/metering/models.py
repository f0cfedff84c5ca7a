"""The ``usage_events`` table: one row per charged usage event (DESIGN §6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, String, Table, false
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime
from modelbank.ledger.models import STORED_KEY_LENGTH


class UsageEventRow(Base):
    """A charged usage event with what it cost and earned.

    The idempotency key is unique: the one random-keyed unique index per event (DESIGN
    §16); the ledger transfers of the charge carry no key of their own and point here
    through ``ref_type='usage'``. ``request_hash`` is the SHA-256 of the canonical event body,
    so a reused key with a different body is detected.
    """

    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(STORED_KEY_LENGTH), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    price_version_id: Mapped[int] = mapped_column(ForeignKey("price_versions.id"))
    usage_type: Mapped[str] = mapped_column(String(32))
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    units: Mapped[int] = mapped_column(BigInteger)
    charge_ucr: Mapped[int] = mapped_column(BigInteger)
    cost_uusd: Mapped[int] = mapped_column(BigInteger)
    earnings_ucr: Mapped[int] = mapped_column(BigInteger)
    margin_ucr: Mapped[int] = mapped_column(BigInteger)
    """charge − provider cost (at the version's credits per USD) − earnings, µcr."""
    balance_after_ucr: Mapped[int] = mapped_column(BigInteger)
    earnings_note: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """Why nothing (or less) was earned (:class:`~modelbank.earnings.payer.NoEarnings`):
    ``self_usage``, ``no_creator``, ``zero``, ``prepaid`` (a gateway call served from a
    marketplace allocation: charged 0, its provider cost recorded), …"""
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resource_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The pool resource that served the call (gateway usage; ``resources.id``, no foreign
    key: metering sits below the pool)."""
    limited_key_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The API key with a spend limit this charge counted on (``api_keys.id``; NULL without
    one; no foreign key, migration 0017): a refund gives the key's allowance back."""
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """True when the counts were estimated (a client left mid-stream before the upstream
    reported usage; DESIGN §9)."""
    metadata_: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", JSON(none_as_null=True), nullable=True
    )

    __table_args__ = (
        Index("ix_usage_events_user", "user_id", "id"),
        Index("ix_usage_events_model", "model_id", "id"),
    )


usage_events_table = cast(Table, UsageEventRow.__table__)
