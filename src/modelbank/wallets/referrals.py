"""Referral credits (issue 13). Every credit here is a ``bonus`` grant, funded by
``platform_promotions`` like every free credit (DESIGN §5), with no cost basis.

Each user has a referral code (:func:`referral_code`, made on first use). A new user who signs
up with one is *referred* (:func:`apply_referral`: once per user, never by their own code or
mutually, never after their first purchase; one user's referrals are serialised on the user's
row). When the referred user's first purchase completes (a credit package or a
subscription's first period), both users get a bonus grant (:func:`reward_referral`; amounts
and expiry are platform settings, :data:`REFERRAL_SETTINGS`), once: the referral row is locked
and stamped, and the grants' idempotency keys are per referral.
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
    ReferralCodeNotFound,
    ReferralNotAllowed,
)
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


def normalize(code: str) -> str:
    """A code as stored: trimmed and upper case (codes are typed by people)."""
    return code.strip().upper()


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
