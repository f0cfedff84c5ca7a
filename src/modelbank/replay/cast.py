"""The users of a replay: created by external id the first time the trace (or the
assignment) names them, each with starting credits (DESIGN §15)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from modelbank.money import UCR_PER_CREDIT, round_uusd
from modelbank.users import service as users
from modelbank.wallets import service as wallets

WELCOME_BONUS_UCR = 5_000_000
"""Every replayed user also gets 5 bonus credits, which burn before the purchased ones."""


@dataclass(frozen=True, slots=True)
class StartingCredits:
    """What each user of a replay starts with: ``purchased_ucr`` µcr of purchased credits
    (cost basis at ``credits_per_usd``) and ``bonus_ucr`` µcr of bonus credits, granted once
    per ``grant_key`` (the grants' idempotency keys are ``<grant_key>:<external id>[:bonus]``)."""

    purchased_ucr: int
    grant_key: str
    credits_per_usd: Decimal = Decimal(100)
    bonus_ucr: int = WELCOME_BONUS_UCR


def ensure_users(
    session: Session,
    names: Sequence[str],
    *,
    credits_ucr: int,
    grant_key: str,
    credits_per_usd: Decimal = Decimal(100),
    bonus_ucr: int = WELCOME_BONUS_UCR,
) -> dict[str, int]:
    """Create missing users; grant each ``credits_ucr`` of purchased credits (cost basis at
    ``credits_per_usd``) and ``bonus_ucr`` of bonus credits (idempotent per ``grant_key``);
    return external id → user id."""
    start = StartingCredits(credits_ucr, grant_key, credits_per_usd, bonus_ucr)
    return admit_users(session, names, start)[0]


def admit_users(
    session: Session, names: Sequence[str], start: StartingCredits
) -> tuple[dict[str, int], list[str]]:
    """:func:`ensure_users` with its credits as one :class:`StartingCredits`: users found by
    external id, the missing ones created, every one granted its starting credits once.
    Returns (external id → user id, the external ids created). Raises
    :class:`~modelbank.errors.InvalidInput` for an external id the users domain refuses
    (empty or over 200 characters)."""
    known = users.find_by_external_ids(session, names)
    created: list[str] = []
    basis = round_uusd(Decimal(start.purchased_ucr) / start.credits_per_usd)
    for name in names:
        if name not in known:
            known[name] = users.create_user(session, name).id
            created.append(name)
        if start.purchased_ucr > 0:
            wallets.grant_info(
                session,
                known[name],
                start.purchased_ucr,
                idempotency_key=f"{start.grant_key}:{name}",
                cost_basis_uusd=basis,
            )
        if start.bonus_ucr > 0:
            wallets.grant_info(
                session,
                known[name],
                start.bonus_ucr,
                source=wallets.GrantSource.BONUS,
                idempotency_key=f"{start.grant_key}:{name}:bonus",
            )
    return known, created


def credits(amount: int) -> int:
    """Whole credits to µcr."""
    return amount * UCR_PER_CREDIT
