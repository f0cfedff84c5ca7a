"""Plans: the per-user limits by credit balance (the operator's wish: limits tied to the
credit balance). A user's plan is the tier with the highest ``min_balance_ucr`` at or below
the wallet's available balance (posted credits − debits − pending holds, µcr)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.ledger.codes import AccountCode
from modelbank.ledger.models import accounts_table as a
from modelbank.ratelimits.models import rate_limit_plans_table as p

CREDIT_UCR = 1_000_000


@dataclass(frozen=True, slots=True)
class Plan:
    """One tier: limits for wallets holding at least ``min_balance_ucr`` (0: unlimited)."""

    name: str
    min_balance_ucr: int
    requests_per_s: int
    tokens_per_min: int


DEFAULT_PLANS = (
    Plan("trial", 0, 5, 20_000),
    Plan("standard", 10 * CREDIT_UCR, 20, 200_000),
    Plan("pro", 1_000 * CREDIT_UCR, 100, 2_000_000),
)
"""The tiers migration 0015 seeds (and used while the table is empty): under 10 credits a
trial's 5 requests/s and 20,000 tokens/min; from 10 credits 20/s and 200,000; from 1,000
credits (a Pro package and more) 100/s and 2,000,000."""


def load_plans(session: Session) -> tuple[Plan, ...]:
    """Every tier, lowest balance first (the defaults when the table is empty)."""
    rows = session.execute(
        select(p.c.name, p.c.min_balance_ucr, p.c.requests_per_s, p.c.tokens_per_min).order_by(
            p.c.min_balance_ucr
        )
    ).all()
    return tuple(Plan(*row) for row in rows) or DEFAULT_PLANS


def plan_for(plans: tuple[Plan, ...], balance_ucr: int) -> Plan:
    """The tier of ``balance_ucr`` among ``plans`` (sorted by ``min_balance_ucr``); below
    every tier, the lowest."""
    chosen = plans[0]
    for plan in plans:
        if plan.min_balance_ucr <= balance_ucr:
            chosen = plan
    return chosen


def available_balance(session: Session, user_id: int) -> int:
    """The user's wallet balance available to spend (µcr); 0 without a wallet."""
    row = session.execute(
        select(a.c.credits_posted - a.c.debits_posted - a.c.debits_pending).where(
            a.c.owner_id == user_id, a.c.code == AccountCode.USER_WALLET.value
        )
    ).first()
    return int(row[0]) if row is not None else 0
