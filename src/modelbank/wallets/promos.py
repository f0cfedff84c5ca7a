"""Referral and promo credits (issue 13). Every credit here is a ``bonus`` grant, funded by
``platform_promotions`` like every free credit (DESIGN §5), with no cost basis.

**Referrals.** Each user has a referral code (:func:`referral_code`, made on first use). A new
user who signs up with one is *referred* (:func:`apply_referral`: once per user, never by
their own code, never after their first purchase). When the referred user's first purchase
completes (a credit package or a subscription's first period), both users get a bonus grant
(:func:`reward_referral`; amounts and expiry are platform settings, :data:`REFERRAL_SETTINGS`),
once: the referral row is locked and stamped, and the grants' idempotency keys are per
referral.

**Promo codes.** An admin creates a code (:func:`create_promo`): a bonus per redemption, an
optional expiry of the code and of the credits it grants, an optional total use limit, and
whether each user may redeem it once. :func:`redeem` locks the code's row, so concurrent
redemptions queue: the use limit is never exceeded and a once-per-user code is never granted
twice to one user (a unique index on (code, user, seq) backs this up). Redeeming a
once-per-user code again returns the first redemption (idempotent).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.platform import service as platform
from modelbank.users import service as users
from modelbank.users.models import users_table
from modelbank.wallets import grants
from modelbank.wallets.billing_errors import (
    PromoCodeNotFound,
    PromoCodeUnavailable,
    ReferralCodeNotFound,
    ReferralNotAllowed,
)
from modelbank.wallets.billing_models import promo_codes_table as promo_codes
from modelbank.wallets.billing_models import redemptions_table as redemptions
from modelbank.wallets.billing_models import referral_codes_table as referral_codes
from modelbank.wallets.billing_models import referrals_table as referrals
from modelbank.wallets.grants import GrantSource
from modelbank.wallets.models import purchases_table as purchases
from modelbank.webhooks import service as webhooks

REFERRAL_SETTINGS: dict[str, int] = {
    "referral_referrer_bonus_ucr": 10_000_000,
    "referral_referred_bonus_ucr": 10_000_000,
    "referral_bonus_ttl_s": 90 * 86_400,
}
"""Platform settings (key → default): the referrer's and the new user's bonus (µcr; 0 turns
that side off) and how long the bonus credits last (seconds; 0: they never expire)."""

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""Referral code letters: no 0/O or 1/I to misread."""
CODE_LENGTH = 8
"""32^8 ≈ 10^12 codes: guessing one is hopeless at API rate limits."""
MAX_PROMO_CODE = 64


def normalize(code: str) -> str:
    """A code as stored: trimmed and upper case (codes are typed by people)."""
    return code.strip().upper()


# ---------------------------------------------------------------- referrals


def referral_code(session: Session, user_id: int, *, now: datetime | None = None) -> str:
    """The user's referral code, made on first call (random, :data:`CODE_LENGTH` letters).
    Raises :class:`~modelbank.users.errors.UserNotFound`."""
    conn = session.connection()
    found = conn.execute(
        select(referral_codes.c.code).where(referral_codes.c.user_id == user_id)
    ).scalar()
    if found is not None:
        return str(found)
    users.get_user(session, user_id)
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        taken = conn.execute(
            select(referral_codes.c.user_id).where(referral_codes.c.code == code)
        ).first()
        if taken is None:
            break
    conn.execute(
        insert(referral_codes).values(user_id=user_id, code=code, created_at=now or utcnow())
    )
    return code


@dataclass(frozen=True, slots=True)
class ReferralInfo:
    """Who referred whom, and when both were rewarded (None: not yet)."""

    referred_user_id: int
    referrer_user_id: int
    created_at: datetime
    rewarded_at: datetime | None


def _referral(row: Any) -> ReferralInfo:
    return ReferralInfo(
        referred_user_id=int(row.referred_user_id),
        referrer_user_id=int(row.referrer_user_id),
        created_at=row.created_at,
        rewarded_at=row.rewarded_at,
    )


def apply_referral(
    session: Session, user_id: int, code: str, *, now: datetime | None = None
) -> ReferralInfo:
    """Record that ``user_id`` signed up with referral ``code``. Raises
    :class:`ReferralCodeNotFound`, :class:`ReferralNotAllowed` (``reason``: ``self`` — the
    user's own code; ``mutual`` — the code's owner was referred by this user;
    ``already_referred``; ``already_purchased`` — only new users are
    referred)."""
    now = now or utcnow()
    users.get_user(session, user_id)
    conn = session.connection()
    # Serialise referrals of one user (two codes applied at once: one wins, the other is
    # refused as already referred, never an integrity error).
    conn.execute(select(users_table.c.id).where(users_table.c.id == user_id).with_for_update())
    referrer = conn.execute(
        select(referral_codes.c.user_id).where(referral_codes.c.code == normalize(code))
    ).scalar()
    if referrer is None:
        raise ReferralCodeNotFound("no user has that referral code")
    if int(referrer) == user_id:
        raise ReferralNotAllowed("a user cannot refer themselves", reason="self")
    mutual = conn.execute(
        select(referrals.c.referred_user_id).where(
            referrals.c.referred_user_id == int(referrer), referrals.c.referrer_user_id == user_id
        )
    ).first()
    if mutual is not None:
        raise ReferralNotAllowed(
            "two users cannot refer each other (the referrer was referred by this user)",
            reason="mutual",
        )
    if conn.execute(select(referrals).where(referrals.c.referred_user_id == user_id)).first():
        raise ReferralNotAllowed(f"user {user_id} was already referred", reason="already_referred")
    bought = conn.execute(
        select(purchases.c.id).where(
            purchases.c.user_id == user_id, purchases.c.status.in_(["completed", "refunded"])
        )
    ).first()
    if bought is not None:
        raise ReferralNotAllowed(
            f"user {user_id} already bought credits: only new users are referred",
            reason="already_purchased",
        )
    conn.execute(
        insert(referrals).values(
            referred_user_id=user_id, referrer_user_id=int(referrer), created_at=now
        )
    )
    return ReferralInfo(user_id, int(referrer), now, None)


def referral_of(session: Session, user_id: int) -> ReferralInfo | None:
    """How ``user_id`` was referred, or None."""
    row = (
        session.connection()
        .execute(select(referrals).where(referrals.c.referred_user_id == user_id))
        .first()
    )
    return None if row is None else _referral(row)


def referred_by(session: Session, user_id: int) -> tuple[int, int]:
    """(users ``user_id`` referred, of whom rewarded)."""
    row = (
        session.connection()
        .execute(
            select(func.count(), func.count(referrals.c.rewarded_at)).where(
                referrals.c.referrer_user_id == user_id
            )
        )
        .one()
    )
    return int(row[0]), int(row[1])


def settings(session: Session) -> dict[str, int]:
    """The referral settings (:data:`REFERRAL_SETTINGS`), as set or by default."""
    return {key: platform.get(session, key, default) for key, default in REFERRAL_SETTINGS.items()}


def set_settings(session: Session, **values: int | None) -> dict[str, int]:
    """Change referral settings (None: keep). Raises :class:`InvalidInput` for an unknown
    key or a negative value."""
    for key, value in values.items():
        if key not in REFERRAL_SETTINGS:
            raise InvalidInput(f"unknown referral setting {key!r}")
        if value is None:
            continue
        if value < 0:
            raise InvalidInput(f"{key} cannot be negative")
        platform.put(session, key, value)
    return settings(session)


def reward_referral(
    session: Session, user_id: int, *, reason: str, now: datetime | None = None
) -> bool:
    """Reward the referral of ``user_id`` after their first completed purchase (``reason``,
    e.g. ``purchase:12``, is recorded): a bonus grant to the new user and one to the referrer
    (the platform settings' amounts and expiry), once. Returns True when it rewarded now;
    False when the user was not referred or was rewarded before."""
    now = now or utcnow()
    conn = session.connection()
    row = conn.execute(
        select(referrals).where(referrals.c.referred_user_id == user_id).with_for_update()
    ).first()
    if row is None or row.rewarded_at is not None:
        return False
    config = settings(session)
    ttl = config["referral_bonus_ttl_s"]
    expires = now + timedelta(seconds=ttl) if ttl > 0 else None
    referrer = int(row.referrer_user_id)
    for who, amount, role in (
        (user_id, config["referral_referred_bonus_ucr"], "referred"),
        (referrer, config["referral_referrer_bonus_ucr"], "referrer"),
    ):
        if amount <= 0:
            continue
        grants.issue(
            session,
            who,
            users.get_user(session, who).wallet_account_id,
            amount,
            source=GrantSource.BONUS,
            idempotency_key=f"referral:{user_id}:{role}",
            expires_at=expires,
            ref=("referral", user_id),
            metadata={"referral": role, "referred_user_id": user_id},
            now=now,
        )
    conn.execute(
        update(referrals)
        .where(referrals.c.referred_user_id == user_id)
        .values(rewarded_at=now, reward_ref=reason[:64])
    )
    webhooks.emit(
        session,
        "referral.rewarded",
        {
            "referred_user_id": user_id,
            "referrer_user_id": referrer,
            "referred_bonus_ucr": config["referral_referred_bonus_ucr"],
            "referrer_bonus_ucr": config["referral_referrer_bonus_ucr"],
            "reason": reason,
        },
        now=now,
    )
    return True


# ---------------------------------------------------------------- promo codes


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
    return _promo(conn.execute(select(promo_codes).where(promo_codes.c.id == new_id)).one())


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
    conn.execute(update(promo_codes).where(promo_codes.c.id == promo_id).values(is_active=False))
    row = conn.execute(select(promo_codes).where(promo_codes.c.id == promo_id)).first()
    if row is None:
        raise PromoCodeNotFound(f"no promo code {promo_id}")
    return _promo(row)


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
