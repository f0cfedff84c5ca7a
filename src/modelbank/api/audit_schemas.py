"""Schemas of the admin audit log's API (issue 16 part 3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditRecordOut(BaseModel):
    """One state-changing action: who (``actor_kind``: admin, service, user, cli, stripe or
    system; the API key and user), when, what (``action`` on ``target_type`` /
    ``target_id``), the state ``before`` and ``after`` (null when there was none) and the
    request id. ``chain_seq`` is its position in the audit hash chain (null until sealed)."""

    id: int
    occurred_at: datetime
    actor_kind: str
    actor_key_id: int | None
    actor_user_id: int | None
    action: str
    target_type: str
    target_id: str | None
    before: Any = Field(description="the state before the action (JSON), or null")
    after: Any = Field(description="the state after the action (JSON), or null")
    request_id: str | None
    chain_seq: int | None


class AuditPage(BaseModel):
    """Newest first; pass ``next_cursor`` as ``cursor`` for the next (older) page."""

    items: list[AuditRecordOut]
    next_cursor: str | None
