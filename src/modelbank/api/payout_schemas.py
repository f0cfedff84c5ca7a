"""HTTP bodies of the payout routes and their presenters from
:mod:`modelbank.earnings.payouts`. Credits ``*_ucr`` µcr with a display string; money
``*_uusd`` µUSD with a display string; the payout rate as a decimal string."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt

from modelbank.api.schemas import PositiveUcr, Strict
from modelbank.earnings.payouts import (
    MAX_MINIMUM_UCR,
    MAX_REASON_LENGTH,
    MAX_REFERENCE_LENGTH,
    PayoutInfo,
    PayoutPage,
    PayoutSummary,
)
from modelbank.errors import InvalidInput
from modelbank.money import format_credits, format_usd

NOT_BLANK = r"^\s*\S"
"""At least one character that is not white space."""

Status = Literal["pending", "completed", "failed", "cancelled"]


class PayoutIn(Strict):
    amount_ucr: PositiveUcr = Field(
        description="µcr to withdraw: at least minimum_ucr, at most available_ucr"
    )


class CompleteIn(Strict):
    external_reference: Annotated[
        str, Field(min_length=1, max_length=MAX_REFERENCE_LENGTH, pattern=NOT_BLANK)
    ] = Field(description="the payment's reference outside modelbank (bank, PayPal…)")


class FailIn(Strict):
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_LENGTH, pattern=NOT_BLANK)] = (
        Field(description="why the payout failed (shown to the creator)")
    )


class MinimumIn(Strict):
    minimum_ucr: StrictInt = Field(ge=1, le=MAX_MINIMUM_UCR, description="smallest payout, µcr")


class MinimumOut(BaseModel):
    minimum_ucr: int
    minimum: str


class PayoutOut(BaseModel):
    id: int
    user_id: int
    status: Status
    amount_ucr: int
    amount: str
    adapter: str = Field(description="how the money is sent: manual (an admin pays outside)")
    external_reference: str | None
    amount_uusd: int | None = Field(description="µUSD paid (completed payouts)")
    amount_usd: str | None
    credits_per_usd: str | None = Field(description="the payout rate (completed payouts)")
    failure_reason: str | None
    hold_id: int = Field(description="the ledger hold on the earnings account")
    created_at: datetime
    resolved_at: datetime | None


def payout_out(p: PayoutInfo) -> PayoutOut:
    return PayoutOut(
        id=p.id,
        user_id=p.user_id,
        status=p.status.value,
        amount_ucr=p.amount_ucr,
        amount=format_credits(p.amount_ucr),
        adapter=p.adapter,
        external_reference=p.external_reference,
        amount_uusd=p.amount_uusd,
        amount_usd=None if p.amount_uusd is None else format_usd(p.amount_uusd),
        credits_per_usd=None if p.credits_per_usd is None else str(p.credits_per_usd),
        failure_reason=p.failure_reason,
        hold_id=p.hold_id,
        created_at=p.created_at,
        resolved_at=p.resolved_at,
    )


class PayoutPageOut(BaseModel):
    items: list[PayoutOut]
    next_cursor: str | None


class UserPayoutsOut(PayoutPageOut):
    """A creator's payouts with what they may withdraw now."""

    balance_ucr: int = Field(description="posted earnings balance")
    pending_ucr: int = Field(description="held by pending payouts")
    owed_ucr: int = Field(description="owed back from refunded usage")
    available_ucr: int = Field(description="balance − pending − owed: what a payout may take")
    available: str
    minimum_ucr: int
    minimum: str


def page_out(page: PayoutPage) -> PayoutPageOut:
    return PayoutPageOut(
        items=[payout_out(p) for p in page.items], next_cursor=encode_cursor(page.next_after)
    )


def user_payouts_out(page: PayoutPage, s: PayoutSummary) -> UserPayoutsOut:
    return UserPayoutsOut(
        items=[payout_out(p) for p in page.items],
        next_cursor=encode_cursor(page.next_after),
        balance_ucr=s.balance_ucr,
        pending_ucr=s.pending_ucr,
        owed_ucr=s.owed_ucr,
        available_ucr=s.available_ucr,
        available=format_credits(s.available_ucr),
        minimum_ucr=s.minimum_ucr,
        minimum=format_credits(s.minimum_ucr),
    )


def encode_cursor(after: tuple[int, int] | None) -> str | None:
    """An opaque cursor for a position (rank, id) of a payout listing; None for None."""
    if after is None:
        return None
    raw = f"payout:{after[0]}:{after[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[int, int] | None:
    """The position inside a cursor; :class:`InvalidInput` for a malformed one."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, rank, last_id = raw.split(":")
        position = (int(rank), int(last_id))
        if prefix != "payout" or position[0] not in (0, 1) or not 0 <= position[1] < 2**63:
            raise ValueError(raw)
        return position
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("malformed cursor: pass next_cursor from a previous page") from None
