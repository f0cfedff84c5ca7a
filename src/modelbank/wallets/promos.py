"""Promo credits (issue 13): codes an admin creates (:func:`create_promo`) — a ``bonus``
grant per redemption from ``platform_promotions``, an optional expiry of the code and of the
credits it grants, an optional total use limit, and whether each user may redeem it once.

:func:`redeem` locks the code's row, so concurrent redemptions queue: the use limit is never
exceeded and a once-per-user code is never granted twice to one user (a unique index on
(code, user, seq) backs this up). Redeeming a once-per-user code again returns the first
redemption (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.users import service as users
from modelbank.wallets import grants
from modelbank.wallets.billing_errors import (
    PromoCodeNotFound,
    PromoCodeUnavailable,
)
from modelbank.wallets.billing_models import promo_codes_table as promo_codes
from modelbank.wallets.billing_models import redemptions_table as redemptions
from modelbank.wallets.grants import GrantSource
from modelbank.wallets.referrals import normalize

MAX_PROMO_CODE = 64
"""Longest promo code (the column)."""


@dataclass(frozen=True, slots=True)
class PromoInfo:
    """A promo code: ``bonus_ucr`` per redemption; see the table's doc."""

    id: int
    code: str
    bonus_ucr: int
    expires_at: datetime | None
    grant_ttl_s: int | None
    use_limit: int | None
    uses: int
    per_user_once: bool
    is_active: bool
    created_at: datetime


def _promo(row: Any) -> PromoInfo:
    return PromoInfo(
        id=int(row.id),
        code=row.code,
        bonus_ucr=int(row.bonus_ucr),
        expires_at=row.expires_at,
        grant_ttl_s=None if row.grant_ttl_s is None else int(row.grant_ttl_s),
        use_limit=None if row.use_limit is None else int(row.use_limit),
        uses=int(row.uses),
        per_user_once=bool(row.per_user_once),
        is_active=bool(row.is_active),
        created_at=row.created_at,
    )


def create_promo(
    session: Session,
    *,
    code: str,
    bonus_ucr: int,
    expires_at: datetime | None = None,
    grant_ttl_s: int | None = None,
    use_limit: int | None = None,
    per_user_once: bool = True,
    now: datetime | None = None,
) -> PromoInfo:
    """Create a promo code (stored upper case). Raises :class:`InvalidInput` (empty or long
    code, taken code, bonus ≤ 0, limit or ttl ≤ 0, expiry naive or past)."""
    now = now or utcnow()
    code = normalize(code)
    if (
        not code
        or len(code) > MAX_PROMO_CODE
        or not code.replace("-", "").replace("_", "").isalnum()
    ):
        raise InvalidInput("code must be 1–64 letters, digits, - or _")
    if bonus_ucr <= 0:
        raise InvalidInput("bonus_ucr must be positive")
    if use_limit is not None and use_limit <= 0:
        raise InvalidInput("use_limit must be positive (or null: no limit)")
    if grant_ttl_s is not None and grant_ttl_s <= 0:
        raise InvalidInput("grant_ttl_s must be positive (or null: the credits never expire)")
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
        raise InvalidInput("expires_at must be a future time with a time zone")
    conn = session.connection()
    if conn.execute(select(promo_codes.c.id).where(promo_codes.c.code == code)).first():
        raise InvalidInput(f"promo code {code!r} exists", promo_code=code)
    new_id = conn.execute(
        insert(promo_codes).returning(promo_codes.c.id),
        {
            "code": code,
            "bonus_ucr": bonus_ucr,
            "expires_at": expires_at,
            "grant_ttl_s": grant_ttl_s,
            "use_limit": use_limit,
            "uses": 0,
            "per_user_once": per_user_once,
            "is_active": True,
            "created_at": now,
        },
    ).scalar_one()
    created = _promo(conn.execute(select(promo_codes).where(promo_codes.c.id == new_id)).one())
    audit.record(session, "promo_code.create", "promo_code", created.id, after=created)
    return created


def list_promos(session: Session, *, after_id: int = 0, limit: int = 100) -> list[PromoInfo]:
    """Promo codes by id."""
    rows = session.connection().execute(
        select(promo_codes)
        .where(promo_codes.c.id > after_id)
        .order_by(promo_codes.c.id)
        .limit(limit)
    )
    return [_promo(row) for row in rows]


def deactivate_promo(session: Session, promo_id: int) -> PromoInfo:
    """Switch a promo code off (no more redemptions). Raises :class:`PromoCodeNotFound`."""
    conn = session.connection()
    found = conn.execute(select(promo_codes).where(promo_codes.c.id == promo_id)).first()
    if found is None:
        raise PromoCodeNotFound(f"no promo code {promo_id}")
    conn.execute(update(promo_codes).where(promo_codes.c.id == promo_id).values(is_active=False))
    row = conn.execute(select(promo_codes).where(promo_codes.c.id == promo_id)).one()
    before, after = _promo(found), _promo(row)
    if before != after:
        audit.record(
            session, "promo_code.deactivate", "promo_code", promo_id, before=before, after=after
        )
    return after


@dataclass(frozen=True, slots=True)
class RedemptionInfo:
    """A redemption: ``bonus_ucr`` granted as grant ``grant_id``."""

    id: int
    promo_code_id: int
    code: str
    user_id: int
    grant_id: int
    bonus_ucr: int
    expires_at: datetime | None
    created_at: datetime


def redeem(
    session: Session, user_id: int, code: str, *, now: datetime | None = None
) -> tuple[RedemptionInfo, bool]:
    """Redeem promo ``code`` for ``user_id``: a bonus grant; return (redemption, new).

    The code's row is locked first (concurrent redemptions queue on it). A once-per-user
    code already redeemed by this user returns that redemption (new = False). Raises
    :class:`~modelbank.users.errors.UserNotFound`, :class:`PromoCodeNotFound` (unknown or
    switched off), :class:`PromoCodeUnavailable` (``reason`` ``expired`` or ``exhausted``)."""
    now = now or utcnow()
    user = users.get_user(session, user_id)
    conn = session.connection()
    row = conn.execute(
        select(promo_codes).where(promo_codes.c.code == normalize(code)).with_for_update()
    ).first()
    if row is None or not row.is_active:
        raise PromoCodeNotFound("no such promo code")
    promo = _promo(row)
    mine = conn.execute(
        select(redemptions)
        .where(redemptions.c.promo_code_id == promo.id, redemptions.c.user_id == user_id)
        .order_by(redemptions.c.seq.desc())
    ).first()
    if mine is not None and promo.per_user_once:
        return _redemption(session, mine, promo), False
    if promo.expires_at is not None and promo.expires_at <= now:
        raise PromoCodeUnavailable(f"promo code {promo.code} has expired", reason="expired")
    if promo.use_limit is not None and promo.uses >= promo.use_limit:
        raise PromoCodeUnavailable(f"promo code {promo.code} has been used up", reason="exhausted")
    seq = 1 if mine is None else int(mine.seq) + 1
    expires = None if promo.grant_ttl_s is None else now + timedelta(seconds=promo.grant_ttl_s)
    grant = grants.issue(
        session,
        user_id,
        user.wallet_account_id,
        promo.bonus_ucr,
        source=GrantSource.BONUS,
        idempotency_key=f"promo:{promo.id}:{user_id}:{seq}",
        expires_at=expires,
        ref=("promo_code", promo.id),
        metadata={"promo_code": promo.code},
        now=now,
    )
    conn.execute(
        update(promo_codes).where(promo_codes.c.id == promo.id).values(uses=promo_codes.c.uses + 1)
    )
    new_id = conn.execute(
        insert(redemptions).returning(redemptions.c.id),
        {
            "promo_code_id": promo.id,
            "user_id": user_id,
            "seq": seq,
            "grant_id": grant.id,
            "bonus_ucr": promo.bonus_ucr,
            "created_at": now,
        },
    ).scalar_one()
    found = conn.execute(select(redemptions).where(redemptions.c.id == new_id)).one()
    return _redemption(session, found, promo), True


def _redemption(session: Session, row: Any, promo: PromoInfo) -> RedemptionInfo:
    grant = grants.get_grant(session, int(row.grant_id))
    return RedemptionInfo(
        id=int(row.id),
        promo_code_id=promo.id,
        code=promo.code,
        user_id=int(row.user_id),
        grant_id=int(row.grant_id),
        bonus_ucr=int(row.bonus_ucr),
        expires_at=None if grant is None else grant.expires_at,
        created_at=row.created_at,
    )


def list_redemptions(session: Session, user_id: int) -> list[RedemptionInfo]:
    """The user's redemptions, oldest first (at most 100)."""
    conn = session.connection()
    rows = conn.execute(
        select(redemptions)
        .where(redemptions.c.user_id == user_id)
        .order_by(redemptions.c.id)
        .limit(100)
    ).all()
    ids = {int(r.promo_code_id) for r in rows}
    found = {
        int(p.id): _promo(p)
        for p in conn.execute(select(promo_codes).where(promo_codes.c.id.in_(ids)))
    }
    return [_redemption(session, r, found[int(r.promo_code_id)]) for r in rows]
