"""Server-side dashboard sessions (issue 16 part 4, D11).

A dashboard cookie is sealed with the deployment's secret key and names a row of
``web_sessions`` by its id; the row decides whether the session is live. Signing out ends
the row (:func:`end`), so a copied cookie stops working at once, in every browser and on
every server process, and revoking the API key ends every session of that key as before.
Checking a session costs one indexed read on the primary key, on dashboard pages only
(the API's hot path never reads this table).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from modelbank.auth.models import web_sessions_table as web_sessions
from modelbank.db.base import utcnow

SESSION_ID_BYTES = 32
"""256 random bits per session id (43 url-safe characters)."""


def start(session: Session, api_key_id: int, *, ttl_s: int, now: datetime | None = None) -> str:
    """Open a session for API key ``api_key_id`` lasting ``ttl_s`` seconds; return its id.
    The key's sessions that have ended or expired are deleted at the same time (so the
    table holds about one row per signed-in browser)."""
    now = now or utcnow()
    conn = session.connection()
    conn.execute(
        delete(web_sessions).where(
            web_sessions.c.api_key_id == api_key_id,
            (web_sessions.c.expires_at <= now) | web_sessions.c.ended_at.is_not(None),
        )
    )
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    conn.execute(
        insert(web_sessions).values(
            id=session_id,
            api_key_id=api_key_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            ended_at=None,
        )
    )
    return session_id


def is_live(
    session: Session, session_id: str, api_key_id: int, *, now: datetime | None = None
) -> bool:
    """True when session ``session_id`` belongs to key ``api_key_id``, has not ended and
    has not expired."""
    row = (
        session.connection()
        .execute(
            select(
                web_sessions.c.api_key_id, web_sessions.c.expires_at, web_sessions.c.ended_at
            ).where(web_sessions.c.id == session_id)
        )
        .first()
    )
    return (
        row is not None
        and int(row.api_key_id) == api_key_id
        and row.ended_at is None
        and row.expires_at > (now or utcnow())
    )


def end(session: Session, session_id: str, *, now: datetime | None = None) -> None:
    """End session ``session_id`` (sign-out); idempotent."""
    session.connection().execute(
        update(web_sessions)
        .where(web_sessions.c.id == session_id, web_sessions.c.ended_at.is_(None))
        .values(ended_at=now or utcnow())
    )


__all__ = ["end", "is_live", "start"]
