"""Read and write operator settings (``platform_settings``): integers by key, with a default
when unset. Keys in use: ``low_balance_default_ucr`` (wallets), ``monetisation_enabled``
(earnings: 1 on, 0 off)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ScalarSelect, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.platform.models import settings_table as settings


def value_of(key: str) -> ScalarSelect[int]:
    """A scalar subquery of the setting ``key`` (NULL when unset), to embed in a query."""
    return select(settings.c.value).where(settings.c.key == key).scalar_subquery()


def get(session: Session, key: str, default: int) -> int:
    """The setting ``key``, or ``default`` when it was never set."""
    found = (
        session.connection().execute(select(settings.c.value).where(settings.c.key == key)).scalar()
    )
    return default if found is None else int(found)


def put(session: Session, key: str, value: int, *, now: datetime | None = None) -> int:
    """Set ``key`` to ``value`` (in the caller's transaction); return the value."""
    now = now or utcnow()
    conn = session.connection()
    before = conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
    changed = conn.execute(
        update(settings).where(settings.c.key == key).values(value=value, updated_at=now)
    ).rowcount
    if not changed:
        conn.execute(settings.insert().values(key=key, value=value, updated_at=now))
    audit.record(session, "setting.set", "setting", key, before=before, after=value, now=now)
    return value
