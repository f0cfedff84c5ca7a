"""The ``models`` table: the catalog of AI models users are charged for."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, ForeignKey, Index, String, Table, text, true
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime


class CatalogModel(Base):
    """A model in the catalog (DESIGN §4). ``creator_id`` NULL: a platform model that earns
    nobody anything. ``access_price_ucr``: what a premium model's access costs, in µcr.
    ``character_id``: the operator's character this model answers as (chat platforms charge
    by character); unique among active models."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(64))
    provider_model_ref: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(16))
    demand: Mapped[str] = mapped_column(String(8))
    creator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    is_premium: Mapped[bool] = mapped_column(default=False)
    access_price_ucr: Mapped[int] = mapped_column(BigInteger, default=0)
    character_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    monetised: Mapped[bool] = mapped_column(default=True, server_default=true())
    """Whether usage of this model earns its beneficiaries anything (DESIGN §7)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # One active model per character (migration 0008): usage sent with a character id
        # resolves to exactly one model. Inactive models keep their link as history.
        Index(
            "uq_models_active_character",
            "character_id",
            unique=True,
            sqlite_where=text("is_active AND character_id IS NOT NULL"),
            postgresql_where=text("is_active AND character_id IS NOT NULL"),
        ),
    )


class ModelAccess(Base):
    """A user's bought access to a premium model (DESIGN §4); ``transfer_id`` is the ledger
    transfer that paid for it (NULL when granted free by an admin)."""

    __tablename__ = "model_access"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    price_ucr: Mapped[int] = mapped_column(BigInteger)
    transfer_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


models_table = cast(Table, CatalogModel.__table__)
model_access_table = cast(Table, ModelAccess.__table__)
