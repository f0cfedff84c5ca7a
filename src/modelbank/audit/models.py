"""The admin audit log table, ``audit_records`` (issue 16 part 3).

Append-only: rows are inserted by :func:`modelbank.audit.service.record` and never updated,
except for the two chain columns, which the sealer (:mod:`modelbank.chain`) sets once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, Index, String, Table, text
from sqlalchemy.orm import Mapped, mapped_column

from modelbank.db.base import Base, BigId, UTCDateTime


class AuditRecord(Base):
    """One state-changing admin or service action: who (``actor_kind`` + key id / user id),
    when, what (``action`` on ``target_type``/``target_id``), the state ``before`` and
    ``after`` (JSON; None when there was none, e.g. a creation's before) and the request id."""

    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_kind: Mapped[str] = mapped_column(String(16))
    """``admin``, ``service`` or ``user`` (an API key), ``cli``, ``stripe`` or ``system``."""
    actor_key_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    """Stable dotted name: ``price.set``, ``grant.create``, ``payout.complete``…"""
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    before: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    after: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    chain_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Position in the audit hash chain, set once by the sealer; NULL until sealed."""
    chain_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 (hex) of the previous link's hash and this record's canonical content."""

    __table_args__ = (
        Index("ix_audit_records_occurred_at", "occurred_at"),
        Index("ix_audit_records_action", "action", "id"),
        Index("ix_audit_records_actor", "actor_kind", "actor_key_id", "id"),
        Index(
            "ix_audit_records_unsealed",
            "id",
            sqlite_where=text("chain_seq IS NULL"),
            postgresql_where=text("chain_seq IS NULL"),
        ),
        Index(
            "uq_audit_records_chain_seq",
            "chain_seq",
            unique=True,
            sqlite_where=text("chain_seq IS NOT NULL"),
            postgresql_where=text("chain_seq IS NOT NULL"),
        ),
    )


audit_records_table = cast(Table, AuditRecord.__table__)
"""Core table of :class:`AuditRecord`."""
