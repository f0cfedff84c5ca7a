"""API keys and the caller's scope (DESIGN §11).

A key is ``mb_<role initial>_<43 url-safe characters>`` (256 random bits). Only its SHA-256
digest is stored; the secret is returned once, at creation. Roles:

* ``admin``: everything;
* ``service``: the operator's backend, acting for any user on user-scoped operations
  (charging usage, reading wallets and earnings) but not on admin operations;
* ``user``: only that user's own resources.

Scoping rule used by every user-scoped operation (:meth:`Principal.can_act_for`): admin and
service may act for any user, a user key only for its own user. Callers turn a refusal into
"not found" so that another user's resources are not revealed to exist.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.auth.errors import Forbidden, KeyNotFound, Unauthenticated
from modelbank.auth.models import api_keys_table as keys
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.users import service as users

KEY_BYTES = 32
"""Random bytes per key (256 bits)."""


class Role(StrEnum):
    """What a key may do."""

    ADMIN = "admin"
    SERVICE = "service"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: key id, role and (for user keys) the user."""

    key_id: int
    role: Role
    user_id: int | None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def scope(self) -> str:
        """Namespace of this caller's idempotency keys."""
        return f"key:{self.key_id}"

    def can_act_for(self, user_id: int) -> bool:
        """True when this caller may see and act on ``user_id``'s resources."""
        return self.role in (Role.ADMIN, Role.SERVICE) or self.user_id == user_id

    def require_admin(self) -> None:
        """Raise :class:`Forbidden` unless this is an admin key."""
        if self.role is not Role.ADMIN:
            raise Forbidden("this operation needs an admin key", role=self.role.value)

    def require_admin_or_service(self) -> None:
        """Raise :class:`Forbidden` unless this is an admin or service key."""
        if self.role not in (Role.ADMIN, Role.SERVICE):
            raise Forbidden("this operation needs an admin or service key", role=self.role.value)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key. ``secret`` is shown once and never stored."""

    id: int
    role: Role
    user_id: int | None
    name: str
    prefix: str
    secret: str
    created_at: datetime


def digest(secret: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 bytes (64 characters)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session, role: Role | str, *, user_id: int | None = None, name: str = ""
) -> NewKey:
    """Create an API key and return it with its secret (the only time it is visible).

    ``user`` keys need ``user_id``; ``admin`` and ``service`` keys must not have one. Raises
    :class:`InvalidInput` (bad role, user missing or extra),
    :class:`~modelbank.users.errors.UserNotFound`.
    """
    try:
        role = Role(role)
    except ValueError:
        raise InvalidInput(f"role must be admin, service or user, got {role!r}") from None
    if role is Role.USER:
        if user_id is None:
            raise InvalidInput("a user key needs a user_id")
        users.get_user(session, user_id)
    elif user_id is not None:
        raise InvalidInput(f"{role.value} keys are not tied to a user")
    secret = f"mb_{role.value[0]}_{secrets.token_urlsafe(KEY_BYTES)}"
    prefix = secret[:12]
    now = utcnow()
    key_id = (
        session.connection()
        .execute(
            insert(keys)
            .values(
                key_hash=digest(secret),
                prefix=prefix,
                role=role.value,
                user_id=user_id,
                name=name[:200],
                created_at=now,
            )
            .returning(keys.c.id)
        )
        .scalar_one()
    )
    audit.record(
        session,
        "key.create",
        "api_key",
        key_id,
        after={"role": role.value, "user_id": user_id, "name": name[:200], "prefix": prefix},
        now=now,
    )
    return NewKey(int(key_id), role, user_id, name[:200], prefix, secret, now)


_FIND = select(keys.c.id, keys.c.role, keys.c.user_id, keys.c.revoked_at)


def authenticate(session: Session, secret: str | None) -> Principal:
    """The principal of a presented key. Raises :class:`Unauthenticated` for a missing,
    unknown or revoked key (one message for all three: nothing to learn from it)."""
    if not secret:
        raise Unauthenticated("missing API key: send Authorization: Bearer <key>")
    row = session.connection().execute(_FIND.where(keys.c.key_hash == digest(secret))).first()
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked API key")
    return Principal(int(row.id), Role(row.role), row.user_id)


def revoke_key(session: Session, key_id: int) -> None:
    """Revoke a key (idempotent: a second revocation changes and records nothing). Raises
    :class:`KeyNotFound`."""
    now = utcnow()
    result = session.connection().execute(
        update(keys).where(keys.c.id == key_id, keys.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    if result.rowcount:
        audit.record(
            session,
            "key.revoke",
            "api_key",
            key_id,
            before={"revoked_at": None},
            after={"revoked_at": now},
            now=now,
        )
    if result.rowcount == 0 and (
        session.connection().execute(select(keys.c.id).where(keys.c.id == key_id)).first() is None
    ):
        raise KeyNotFound(f"no API key {key_id}", key_id=key_id)


def authenticate_digest(session: Session, key_id: int, key_digest: str) -> Principal:
    """The principal of key ``key_id`` when its stored digest (:func:`digest`) is
    ``key_digest`` and it is not revoked: how a dashboard session, which carries the key's id
    and digest but never the key, re-checks it on every request (revoking the key ends the
    session at once). Raises :class:`Unauthenticated` otherwise."""
    row = (
        session.connection()
        .execute(_FIND.where(keys.c.id == key_id, keys.c.key_hash == key_digest))
        .first()
    )
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked API key")
    return Principal(int(row.id), Role(row.role), row.user_id)
