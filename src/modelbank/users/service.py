"""User service: create users (with their wallet and earnings accounts) and look them up."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.users.errors import UserExists, UserNotFound
from modelbank.users.models import users_table as users

MAX_EXTERNAL_ID_LENGTH = 200
"""Matches the column; operators' ids (UUIDs, emails) fit easily."""


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user and their ledger accounts."""

    id: int
    external_id: str
    display_name: str
    wallet_account_id: int
    earnings_account_id: int
    created_at: datetime | None = None


def create_user(session: Session, external_id: str, display_name: str | None = None) -> UserInfo:
    """Create a user and open their wallet and earnings accounts.

    Raises :class:`UserExists` when ``external_id`` is taken, :class:`InvalidInput` when it is
    empty or longer than 200 characters.
    """
    external_id = external_id.strip()
    if not external_id or len(external_id) > MAX_EXTERNAL_ID_LENGTH:
        raise InvalidInput("external_id must be 1–200 characters")
    conn = session.connection()
    if conn.execute(select(users.c.id).where(users.c.external_id == external_id)).first():
        raise UserExists(f"user {external_id!r} already exists", external_id=external_id)
    now = utcnow()
    try:
        user_id = int(
            conn.execute(
                insert(users)
                .values(
                    external_id=external_id,
                    display_name=display_name or external_id,
                    created_at=now,
                )
                .returning(users.c.id)
            ).scalar_one()
        )
    except IntegrityError:  # created concurrently since the check above
        raise UserExists(f"user {external_id!r} already exists", external_id=external_id) from None
    opened = ledger.open_user_accounts(session, user_id)
    return UserInfo(
        id=user_id,
        external_id=external_id,
        display_name=display_name or external_id,
        wallet_account_id=opened[AccountCode.USER_WALLET],
        earnings_account_id=opened[AccountCode.USER_EARNINGS],
        created_at=now,
    )


def get_user(session: Session, user_id: int) -> UserInfo:
    """A user by id. Raises :class:`UserNotFound`."""
    row = session.connection().execute(select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise UserNotFound(f"no user {user_id}", user_id=user_id)
    opened = ledger.open_user_accounts(session, user_id)
    return UserInfo(
        id=int(row.id),
        external_id=row.external_id,
        display_name=row.display_name,
        wallet_account_id=opened[AccountCode.USER_WALLET],
        earnings_account_id=opened[AccountCode.USER_EARNINGS],
        created_at=row.created_at,
    )


def find_by_external_ids(session: Session, external_ids: Iterable[str]) -> dict[str, int]:
    """Map external id → user id for those that exist."""
    ids = list(set(external_ids))
    if not ids:
        return {}
    rows = session.connection().execute(
        select(users.c.external_id, users.c.id).where(users.c.external_id.in_(ids))
    )
    return {row.external_id: int(row.id) for row in rows}


def list_users(session: Session, *, after_id: int = 0, limit: int = 50) -> list[UserInfo]:
    """Users in id order after ``after_id`` (a pagination cursor), at most ``limit``; three
    queries whatever the page size."""
    rows = (
        session.connection()
        .execute(select(users).where(users.c.id > after_id).order_by(users.c.id).limit(limit))
        .all()
    )
    ids = [int(row.id) for row in rows]
    wallets = ledger.user_account_ids(session, ids, AccountCode.USER_WALLET)
    earnings = ledger.user_account_ids(session, ids, AccountCode.USER_EARNINGS)
    return [
        UserInfo(
            id=int(row.id),
            external_id=row.external_id,
            display_name=row.display_name,
            wallet_account_id=wallets[int(row.id)],
            earnings_account_id=earnings[int(row.id)],
            created_at=row.created_at,
        )
        for row in rows
    ]
