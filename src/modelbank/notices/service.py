"""Notice recipients and :func:`notify` (see :mod:`modelbank.notices`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.notices.models import recipients_table as recipients
from modelbank.tasks import service as tasks

EMAIL_TASK = "email"
"""Task kind of an email notice."""

KINDS: tuple[str, ...] = (
    "low_balance",
    "auto_topup_succeeded",
    "auto_topup_failed",
    "payout_completed",
    "subscription_renewal_failed",
)
"""Every notice kind; each has a template ``web/templates/email/<kind>.txt``."""

MAX_EMAIL_LENGTH = 320
"""RFC 3696's longest address (64 + 1 + 255)."""
_EMAIL = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+|[^@\s<>,;\"]+@localhost")


@dataclass(frozen=True, slots=True)
class Recipient:
    """A user's notice address; ``enabled`` False stops every notice."""

    user_id: int
    email: str
    enabled: bool
    updated_at: datetime


def check_email(email: str) -> str:
    """``email`` stripped, if it looks like one address (``local@domain.tld``) of at most
    :data:`MAX_EMAIL_LENGTH` characters with no header-breaking characters; else
    :class:`InvalidInput`."""
    value = email.strip()
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(value):
        raise InvalidInput("email: expected one address such as name@example.com")
    return value


def get_recipient(session: Session, user_id: int) -> Recipient | None:
    """The user's notice address, or None when they gave none."""
    row = (
        session.connection()
        .execute(select(recipients).where(recipients.c.user_id == user_id))
        .first()
    )
    if row is None:
        return None
    return Recipient(int(row.user_id), row.email, bool(row.enabled), row.updated_at)


def set_recipient(
    session: Session, user_id: int, email: str, *, enabled: bool = True, now: datetime | None = None
) -> Recipient:
    """Set the user's notice address and switch. Raises :class:`InvalidInput`."""
    values = {"email": check_email(email), "enabled": enabled, "updated_at": now or utcnow()}
    conn = session.connection()
    if not conn.execute(
        update(recipients).where(recipients.c.user_id == user_id).values(**values)
    ).rowcount:
        conn.execute(insert(recipients).values(user_id=user_id, **values))
    found = get_recipient(session, user_id)
    assert found is not None
    return found


def notify(
    session: Session,
    user_id: int,
    kind: str,
    context: dict[str, Any],
    *,
    now: datetime | None = None,
) -> int | None:
    """Queue notice ``kind`` (one of :data:`KINDS`) to ``user_id`` in the caller's transaction,
    rendered later with ``context`` (JSON values; amounts as integer µcr / µUSD, the
    templates format them). Returns the task id, or None when the user has no enabled
    address (nothing is written). One select, one insert. Raises :class:`InvalidInput` for
    an unknown kind."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown notice kind {kind!r}", kind=kind, known=list(KINDS))
    recipient = get_recipient(session, user_id)
    if recipient is None or not recipient.enabled:
        return None
    payload = {"kind": kind, "to": recipient.email, "context": {**context, "user_id": user_id}}
    return tasks.enqueue(session, EMAIL_TASK, payload, user_id=user_id, now=now)
