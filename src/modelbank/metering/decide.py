"""Decide one event of a batch (DESIGN §6): a typed :class:`ChargeLine` to post, a
:class:`Rejection` that writes nothing, or a :class:`Repeat` of a key charged earlier in the
same batch.

The checks run in a fixed order (user, model, premium access, price, hold, funds, the
key's spend limit) and the
rules are called from their homes: the rate card prices the usage
(:mod:`modelbank.pricing.ratecard`), the payer computes creator earnings
(:mod:`modelbank.earnings.payer`), the ledger says whether a hold may be posted
(:mod:`modelbank.ledger.holds`). Events are decided in order: each one sees what the earlier
ones spent, so a wallet that runs dry rejects its later events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelbank.auth import limits as key_limits
from modelbank.auth.errors import KeyLimitReached
from modelbank.catalog.errors import AccessRequired, ModelNotFound
from modelbank.earnings.payer import Earned
from modelbank.errors import DomainError
from modelbank.ledger import holds
from modelbank.ledger.errors import HoldNotPending, InsufficientFunds
from modelbank.metering.context import BatchContext
from modelbank.metering.errors import InvalidUsage
from modelbank.metering.events import UsageEvent
from modelbank.pricing.errors import NoPrice
from modelbank.pricing.ratecard import Quote, RateCard
from modelbank.users.errors import UserNotFound


@dataclass(slots=True)
class ChargeLine:
    """One event to post: who pays (``user_id``, ``wallet`` account), for which model and
    price version, the :class:`~modelbank.pricing.ratecard.Quote` (µcr charged, µUSD cost),
    the creators' :class:`~modelbank.earnings.payer.Earned`, the wallet's posted balance
    after it (µcr) and when it happened. ``usage_id`` is given when posted."""

    index: int
    event: UsageEvent
    request_hash: str
    wallet: int
    model_id: int
    card: RateCard
    quote: Quote
    earned: Earned
    rule_version: int
    balance_after_ucr: int
    occurred_at: datetime
    occurred_db: Any
    usage_id: int = 0

    @property
    def tokens(self) -> int:
        """Input + output tokens (what per-token earnings and the aggregates count)."""
        return self.event.input_tokens + self.event.output_tokens

    @property
    def margin_ucr(self) -> int:
        """What the platform keeps (DESIGN §4, :func:`~modelbank.pricing.ratecard.margin_ucr`)."""
        return self.quote.margin_ucr(self.earned.total_ucr)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Event ``index`` is refused with ``error``; nothing of it is written."""

    index: int
    error: DomainError


@dataclass(frozen=True, slots=True)
class Repeat:
    """Event ``index`` repeats the key of event ``first`` of the same batch: it is answered
    after posting, as a replay of the first or a conflict."""

    index: int
    first: int


Decision = ChargeLine | Rejection | Repeat


def decide(ctx: BatchContext, index: int) -> Decision:
    """Decide event ``index`` of ``ctx.batch`` (valid, not a stored replay). Updates the
    context's running totals when it returns a :class:`ChargeLine`."""
    event = ctx.batch.events[index]
    first = ctx.first_of_key.get(event.idempotency_key)
    if first is not None:
        return Repeat(index, first)
    account = ctx.wallets.get(event.user_id)
    if account is None:
        return Rejection(index, UserNotFound(f"no user {event.user_id}", user_id=event.user_id))
    info = ctx.models.get(event.model)
    if info is None:
        return Rejection(
            index, ModelNotFound(f"no active model {event.model!r}", model=event.model)
        )
    if (event.user_id, info.id) in ctx.blocked:
        return Rejection(
            index,
            AccessRequired(
                f"model {info.slug!r} is premium: buy access first",
                model_id=info.id,
                access_price_ucr=info.access_price_ucr,
            ),
        )
    card = ctx.cards.get(info.id)
    if card is None:
        return Rejection(
            index, NoPrice(f"model {info.slug!r} has no price in force", model_id=info.id)
        )
    fresh = event.input_tokens - event.cached_input_tokens
    quote = card.quote_counts(
        fresh,
        event.cached_input_tokens,
        event.output_tokens,
        event.units,
        fixed_charge_ucr=0 if event.prepaid else event.charge_ucr,
    )
    charge = quote.charge_ucr
    available = account.available - ctx.spent.get(account.id, 0) + ctx.released.get(account.id, 0)
    if event.hold_id is not None:
        problem = _capture_problem(ctx, event.hold_id, account.id, charge)
        if problem is not None:
            return Rejection(index, problem)
        available += ctx.holds[event.hold_id].amount  # posting it releases what it reserved
    if charge > available:
        return Rejection(
            index,
            InsufficientFunds(
                f"wallet of user {event.user_id} has {available} µcr available,"
                f" {charge} µcr needed",
                account_id=account.id,
                available_ucr=available,
                needed_ucr=charge,
            ),
        )
    if event.limited_key_id is not None:
        refused = _count_on_key(ctx, event, event.limited_key_id, charge)
        if refused is not None:
            return Rejection(index, refused)
    return _line(ctx, index, event, account.id, info.id, card, quote)


def _count_on_key(
    ctx: BatchContext, event: UsageEvent, key_id: int, charge_ucr: int
) -> KeyLimitReached | None:
    """Count the charge on its limited key, last of the checks (one conditional UPDATE in the
    batch's transaction, :mod:`modelbank.auth.limits`); a capture settles the hold's
    reservation instead, never refused. Returns the refusal, having written nothing."""
    held = 0
    try:
        if event.hold_id is None:
            key_limits.count_charge(ctx.conn, key_id, charge_ucr, ctx.now)
        else:
            held = ctx.holds[event.hold_id].amount
            key_limits.settle_hold(ctx.conn, key_id, held, charge_ucr, ctx.now)
    except KeyLimitReached as exc:
        return exc
    ctx.key_counts.append((key_id, charge_ucr, held))
    return None


def _capture_problem(
    ctx: BatchContext, hold_id: int, wallet: int, charge_ucr: int
) -> DomainError | None:
    hold = ctx.holds.get(hold_id)
    if hold is None or hold.debit_account_id != wallet:
        return InvalidUsage("no such hold on this user's wallet")
    if hold_id in ctx.captured:  # an earlier event of this batch posts it
        return HoldNotPending(f"hold {hold_id} is already posted", status="posted")
    return holds.posting_problem(hold, charge_ucr, ctx.now)


def _line(
    ctx: BatchContext,
    index: int,
    event: UsageEvent,
    wallet: int,
    model_id: int,
    card: RateCard,
    quote: Quote,
) -> ChargeLine:
    """Record the charge in the running totals and build its line."""
    spent = ctx.spent[wallet] = ctx.spent.get(wallet, 0) + quote.charge_ucr
    if event.hold_id is not None:
        ctx.captured.add(event.hold_id)
        # Posting the hold releases all it reserved: later events of this wallet may spend
        # it (the posted balance, and so balance_after, only loses the charge).
        ctx.released[wallet] = ctx.released.get(wallet, 0) + ctx.holds[event.hold_id].amount
    payer = ctx.payers[model_id]
    used = ctx.uses.get(model_id, 0)
    ctx.uses[model_id] = used + 1
    earned = payer.pay(
        tokens=event.input_tokens + event.output_tokens,
        charge_ucr=quote.charge_ucr,
        prior_uses=payer.use_count + used,
        usage_type=event.usage_type,
        payer_id=event.user_id,
        prepaid=event.prepaid,
    )
    occurred, occurred_db = ctx.db_time(event.occurred_at)
    ctx.first_of_key[event.idempotency_key] = index
    return ChargeLine(
        index=index,
        event=event,
        request_hash=ctx.batch.hashes[index],
        wallet=wallet,
        model_id=model_id,
        card=card,
        quote=quote,
        earned=earned,
        rule_version=payer.rule_version,
        balance_after_ucr=ctx.wallets[event.user_id].balance - spent,
        occurred_at=occurred,
        occurred_db=occurred_db,
    )
