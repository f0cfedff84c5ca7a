"""The ``idempotent_requests`` table (DESIGN §12)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime


class IdempotentRequest(Base):
    """The first response to a request made with an idempotency key.

    ``scope`` namespaces keys per caller (``key:<api key id>``) so two tenants never collide;
    ``request_hash`` is the SHA-256 of method, route and body; ``status_code`` and
    ``response`` are replayed verbatim for the same key and body."""

    __tablename__ = "idempotent_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("uq_idempotent_requests_scope_key", "scope", "idempotency_key", unique=True),
    )


idempotent_requests_table = cast(Table, IdempotentRequest.__table__)
