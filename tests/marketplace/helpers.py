"""Builders for marketplace tests: a seller with a deposited key whose quota has a market
part, a buyer with credits, balances and outbox events."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.ledger.codes import AccountCode
from modelbank.webhooks.models import outbox_events_table
from tests import factories
from tests.pool.helpers import deposit, platform, wallet

CREDITS = 1_000_000
"""µcr in one credit."""
MARKET_UUSD = 5_000_000
"""The market part of the seller's key: $5 of provider spend."""


@dataclass(frozen=True)
class World:
    seller: int
    buyer: int
    other: int
    model: int
    resource: int


def world(
    session: Session, *, key: str = "sk-market-0123456789abcdef", slug: str = "gpt-4o"
) -> World:
    """A seller with an active resource ($10 quota, $5 market part) serving ``slug``, a buyer
    and another user with 1,000 credits each."""
    seller = factories.user(session, "seller")
    buyer = factories.user(session, "buyer", credits_ucr=1_000 * CREDITS)
    other = factories.user(session, "other", credits_ucr=1_000 * CREDITS)
    model = factories.model(session, slug)
    info = deposit(
        session, seller, model, api_key=key, quota_uusd=10_000_000, market_quota_uusd=MARKET_UUSD
    )
    return World(seller, buyer, other, model, info.id)


def balance(session: Session, user_id: int) -> int:
    """The user's wallet balance (µcr, posted)."""
    return wallet(session, user_id).balance


def escrow(session: Session) -> int:
    return platform(session, AccountCode.MARKETPLACE_ESCROW)


def fees(session: Session) -> int:
    return platform(session, AccountCode.PLATFORM_FEES)


def events(session: Session, event_type: str) -> list[dict[str, object]]:
    return [
        dict(row.payload)
        for row in session.execute(
            select(outbox_events_table)
            .where(outbox_events_table.c.event_type == event_type)
            .order_by(outbox_events_table.c.id)
        )
    ]
