"""Stored usage rows, read back: :func:`get_usage`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.metering.errors import UsageNotFound
from modelbank.metering.models import usage_events_table as usage


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """A charged usage event as stored: µcr charged and paid to creators, µUSD cost."""

    id: int
    idempotency_key: str
    user_id: int
    model_id: int
    price_version_id: int
    usage_type: str
    input_tokens: int
    output_tokens: int
    charge_ucr: int
    cost_uusd: int
    earnings_ucr: int
    occurred_at: datetime
    created_at: datetime
    earnings_note: str | None = None
    """Why nothing (or less) was earned: no_creator, self_usage, zero, monetisation_off,
    prepaid (served from a marketplace allocation), …"""
    limited_key_id: int | None = None
    """The API key with a spend limit the charge counted on (None without one)."""


def get_usage(session: Session, usage_id: int) -> UsageRecord:
    """The usage event ``usage_id``. Raises :class:`UsageNotFound`."""
    row = session.connection().execute(select(usage).where(usage.c.id == usage_id)).first()
    if row is None:
        raise UsageNotFound(f"no usage event {usage_id}", usage_id=usage_id)
    return UsageRecord(
        id=int(row.id),
        idempotency_key=row.idempotency_key,
        user_id=int(row.user_id),
        model_id=int(row.model_id),
        price_version_id=int(row.price_version_id),
        usage_type=row.usage_type,
        input_tokens=int(row.input_tokens),
        output_tokens=int(row.output_tokens),
        charge_ucr=int(row.charge_ucr),
        cost_uusd=int(row.cost_uusd),
        earnings_ucr=int(row.earnings_ucr),
        occurred_at=row.occurred_at,
        created_at=row.created_at,
        earnings_note=row.earnings_note,
        limited_key_id=None if row.limited_key_id is None else int(row.limited_key_id),
    )
