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
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.auth import limits as key_limits
from modelbank.auth.errors import Forbidden, KeyNotFound, Unauthenticated
from modelbank.auth.limits import KeyUsage, LimitPeriod, period_start, usage_of
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
    limited: bool = False
    """The key carries a spend limit: what it charges counts against it
    (:mod:`modelbank.auth.limits`)."""

    @property
    def limited_key_id(self) -> int | None:
        """The key id charges made by this caller count against (None: no limit)."""
        return self.key_id if self.limited else None

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

    def require_key_manager(self) -> None:
        """Raise :class:`Forbidden` for a key with a spend limit: it may not create or revoke
        keys (an app handed a limited key must not mint itself an unlimited one)."""
        if self.limited:
            raise Forbidden("a key with a spend limit cannot create or revoke keys")

    def require_wallet_spender(self) -> None:
        """Raise :class:`Forbidden` for a key with a spend limit on a route that moves value
        out of the user's account outside usage: spending the wallet (premium access, stake
        and marketplace buys), withdrawing earnings (payout requests), or offering stakes or
        quota for sale (listing, re-pricing). Only usage charges and holds count against a
        limit, so a limited key may move no other value (an app handed a 1 µcr key must not
        sell its owner's stake for 1 µcr to a colluder, nor cash out the earnings)."""
        if self.limited:
            raise Forbidden(
                "a key with a spend limit can only spend on usage and holds: it cannot buy,"
                " list for sale or request payouts"
            )

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
    limit_ucr: int | None = None
    limit_period: LimitPeriod | None = None


def digest(secret: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 bytes (64 characters)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session,
    role: Role | str,
    *,
    user_id: int | None = None,
    name: str = "",
    limit_ucr: int | None = None,
    limit_period: LimitPeriod | str | None = None,
) -> NewKey:
    """Create an API key and return it with its secret (the only time it is visible).

    ``user`` keys need ``user_id``; ``admin`` and ``service`` keys must not have one.
    ``limit_ucr`` (µcr ≥ 0; None: no limit) caps what the key may charge per
    ``limit_period`` (default ``never``; only user keys carry limits). Raises
    :class:`InvalidInput` (bad role, user missing or extra, a bad limit),
    :class:`~modelbank.users.errors.UserNotFound`.
    """
    period = _limit_period(role, limit_ucr, limit_period)
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
    limits = {}
    if period is not None:
        limits = {
            "limit_ucr": limit_ucr,
            "limit_period": period.value,
            "period_start": period_start(period, now),
        }
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
                **limits,
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
        after={
            "role": role.value,
            "user_id": user_id,
            "name": name[:200],
            "prefix": prefix,
            "limit_ucr": limit_ucr,
            "limit_period": None if period is None else period.value,
        },
        now=now,
    )
    return NewKey(int(key_id), role, user_id, name[:200], prefix, secret, now, limit_ucr, period)


def _limit_period(
    role: Role | str, limit_ucr: int | None, limit_period: LimitPeriod | str | None
) -> LimitPeriod | None:
    """The period of a new key's limit (None: no limit). Raises :class:`InvalidInput`."""
    if limit_ucr is None:
        if limit_period is not None:
            raise InvalidInput("limit_period needs limit_ucr", param="limit_period")
        return None
    if role != Role.USER.value:
        raise InvalidInput("only user keys carry spend limits", param="limit_ucr")
    if isinstance(limit_ucr, bool) or not 0 <= limit_ucr < 2**63:
        raise InvalidInput(f"limit_ucr must be a µcr amount ≥ 0, got {limit_ucr!r}")
    try:
        return LimitPeriod(limit_period or LimitPeriod.NEVER)
    except ValueError:
        raise InvalidInput(
            f"limit_period must be day, week, month or never, got {limit_period!r}",
            param="limit_period",
        ) from None


_FIND = select(keys.c.id, keys.c.role, keys.c.user_id, keys.c.revoked_at, keys.c.limit_ucr)


def authenticate(session: Session, secret: str | None) -> Principal:
    """The principal of a presented key. Raises :class:`Unauthenticated` for a missing,
    unknown or revoked key (one message for all three: nothing to learn from it)."""
    if not secret:
        raise Unauthenticated("missing API key: send Authorization: Bearer <key>")
    row = session.connection().execute(_FIND.where(keys.c.key_hash == digest(secret))).first()
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked API key")
    return Principal(int(row.id), Role(row.role), row.user_id, row.limit_ucr is not None)


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
    return Principal(int(row.id), Role(row.role), row.user_id, row.limit_ucr is not None)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as its owner sees it (never the secret): ``usage`` is its limit's state at the
    moment read (None: no limit)."""

    id: int
    role: Role
    user_id: int | None
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    usage: KeyUsage | None


MAX_KEYS_LISTED = 500
"""Keys per listing: more than any user needs; bounds the page."""


def list_user_keys(
    session: Session, user_id: int, *, include_revoked: bool = False, now: datetime | None = None
) -> list[KeyInfo]:
    """The user's keys, oldest first (at most :data:`MAX_KEYS_LISTED`), with each limit's
    state at ``now``: spent in the current period, reserved by pending holds, left, reset
    time. Raises :class:`~modelbank.users.errors.UserNotFound`."""
    users.get_user(session, user_id)
    now = now or utcnow()
    query = select(keys).where(keys.c.user_id == user_id)
    if not include_revoked:
        query = query.where(keys.c.revoked_at.is_(None))
    rows = session.connection().execute(query.order_by(keys.c.id).limit(MAX_KEYS_LISTED))
    return [_key_info(row, now) for row in rows]


def _key_info(row: Any, now: datetime) -> KeyInfo:
    return KeyInfo(
        id=int(row.id),
        role=Role(row.role),
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        usage=usage_of(row, now),
    )


def edit_key_limit(
    session: Session,
    user_id: int,
    key_id: int,
    *,
    limit_ucr: int | None = None,
    limit_period: LimitPeriod | str | None = None,
    remove: bool = False,
    now: datetime | None = None,
) -> KeyInfo:
    """Change the spend limit of the user's active key ``key_id`` and return the key as now
    limited (``usage`` at ``now``). ``limit_ucr`` (µcr ≥ 0) and ``limit_period`` are each
    optional; the one not given stays (a key without a limit needs ``limit_ucr``; its period
    then defaults to ``never``). ``remove``: the key loses its limit (nothing else may be
    given). Counters follow :func:`modelbank.auth.limits.set_limit`: what was spent in the
    current period stays spent; a limit below it is allowed and leaves 0. Audited as
    ``key.limit``.

    Raises :class:`KeyNotFound` (not one of the user's keys, or revoked: another user's key
    is not revealed to exist), :class:`InvalidInput` (nothing to change, a bad amount or
    period, a period for a key without a limit)."""
    now = now or utcnow()
    conn = session.connection()
    row = conn.execute(select(keys).where(keys.c.id == key_id).with_for_update()).first()
    if row is None or row.user_id != user_id or row.revoked_at is not None:
        raise KeyNotFound(f"no API key {key_id}", key_id=key_id)
    before = {"limit_ucr": row.limit_ucr, "limit_period": row.limit_period}
    if remove:
        if limit_ucr is not None or limit_period is not None:
            raise InvalidInput("a removed limit takes no limit_period", param="limit_period")
        key_limits.remove_limit(conn, key_id)
        after: dict[str, object] = {"limit_ucr": None, "limit_period": None}
    else:
        if limit_ucr is None and limit_period is None:
            raise InvalidInput("give limit_ucr or limit_period to change")
        if limit_ucr is None and row.limit_ucr is None:
            raise InvalidInput("limit_period needs limit_ucr", param="limit_period")
        new_limit = int(row.limit_ucr) if limit_ucr is None else limit_ucr
        period = _limit_period(
            row.role, new_limit, limit_period or row.limit_period or LimitPeriod.NEVER
        )
        assert period is not None
        key_limits.set_limit(conn, key_id, new_limit, period, now)
        after = {"limit_ucr": new_limit, "limit_period": period.value}
    audit.record(session, "key.limit", "api_key", key_id, before=before, after=after, now=now)
    edited = conn.execute(select(keys).where(keys.c.id == key_id)).one()
    return _key_info(edited, now)


def revoke_user_key(session: Session, user_id: int, key_id: int) -> None:
    """Revoke the user's key ``key_id`` (idempotent). Raises :class:`KeyNotFound` when the
    key is not one of that user's (another user's key is not revealed to exist)."""
    owner = (
        session.connection()
        .execute(select(keys.c.user_id).where(keys.c.id == key_id))
        .scalar_one_or_none()
    )
    if owner != user_id:
        raise KeyNotFound(f"no API key {key_id}", key_id=key_id)
    revoke_key(session, key_id)
