"""Price a stream of usage events under two price sets, with the charge path's own code
(DESIGN §4, §6, §7, §13): the rate card (:mod:`modelbank.pricing.ratecard`) gives each
event's charge, provider cost (µUSD and µcr) and margin, the earnings payer
(:mod:`modelbank.earnings.payer`, built by
:meth:`modelbank.metering.reference.ModelReference.payer_at` as the charge path builds it)
gives the creators' earnings. Nothing here reads or writes the database.

Per price set (``now``: today's or the recorded prices; ``proposed``) and per model the
report sums: events, revenue (µcr charged), provider cost (µUSD, and µcr at each version's
credits per USD, rounded per event as a charge rounds it), creator earnings (µcr) and margin
(µcr, :func:`~modelbank.pricing.ratecard.margin_ucr`: revenue − cost µcr − earnings).

**Wallets.** Each user's balance is simulated through the events in order, per price set,
from a starting balance the caller gives: an event whose charge exceeds the balance is
*unfunded* (the charge path would refuse it with 402: it spends nothing, as
:func:`modelbank.metering.decide.decide` does), and its user *ran dry*. Revenue, cost and
earnings still count every event (the same traffic under both price sets);
``unfunded_ucr`` says how much of the revenue those events are.

**Popularity.** An event's popularity tier is its model's lifetime uses before it
(``prior_uses``, kept by the caller's order of events), the same under both price sets.

**Fixed charges.** An event charged an agreed amount (a hold captured for a given sum) keeps
that amount under both price sets (``fixed_charge_ucr``); its cost is the card's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from modelbank.earnings.payer import Payer
from modelbank.metering.reference import ModelReference
from modelbank.pricing.ratecard import margin_ucr, rate_card
from modelbank.pricing.service import PriceInfo


@dataclass(frozen=True, slots=True)
class Use:
    """One usage event to price: who, which model, what it consumed, when (the moment that
    picks the earnings rule in force) and, for a fixed-amount charge, the amount (µcr)."""

    user_id: int
    model_id: int
    usage_type: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    units: int
    at: datetime
    fixed_charge_ucr: int | None = None


@dataclass(slots=True)
class Figures:
    """Sums over events (µcr, except ``cost_uusd`` in µUSD)."""

    events: int = 0
    revenue_ucr: int = 0
    cost_uusd: int = 0
    cost_ucr: int = 0
    earnings_ucr: int = 0
    unfunded_events: int = 0
    unfunded_ucr: int = 0

    @property
    def margin_ucr(self) -> int:
        """Revenue − provider cost (µcr) − creator earnings (DESIGN §4)."""
        return margin_ucr(self.revenue_ucr, self.cost_ucr, self.earnings_ucr)

    def add(self, charge: int, cost_uusd: int, cost_ucr: int, earnings: int) -> None:
        """Count one priced event."""
        self.events += 1
        self.revenue_ucr += charge
        self.cost_uusd += cost_uusd
        self.cost_ucr += cost_ucr
        self.earnings_ucr += earnings

    def as_dict(self) -> dict[str, int]:
        """The figures as JSON-ready integers, margin included."""
        return {
            "events": self.events,
            "revenue_ucr": self.revenue_ucr,
            "cost_uusd": self.cost_uusd,
            "cost_ucr": self.cost_ucr,
            "earnings_ucr": self.earnings_ucr,
            "margin_ucr": self.margin_ucr,
            "unfunded_events": self.unfunded_events,
            "unfunded_ucr": self.unfunded_ucr,
        }


@dataclass(slots=True)
class PriceSet:
    """One price set's totals, per model (model id → :class:`Figures`) and its simulated
    wallets (user id → µcr left); ``dry``: users with at least one unfunded event."""

    total: Figures = field(default_factory=Figures)
    by_model: dict[int, Figures] = field(default_factory=dict)
    balances: dict[int, int] = field(default_factory=dict)
    dry: set[int] = field(default_factory=set)


@dataclass(slots=True)
class WhatIf:
    """A what-if under way: feed events with :meth:`price` in order; read ``now``,
    ``proposed`` and ``changed`` (model ids whose proposed price differs)."""

    refs: Mapping[int, ModelReference]
    platform_monetised: bool
    starting_balances: Mapping[int, int]
    prior_uses: dict[int, int]
    now: PriceSet = field(default_factory=PriceSet)
    proposed: PriceSet = field(default_factory=PriceSet)
    changed: set[int] = field(default_factory=set)
    users: set[int] = field(default_factory=set)
    _payers: dict[tuple[int, int], Payer] = field(default_factory=dict)

    def payer(self, model_id: int, at: datetime) -> Payer:
        """The payer of ``model_id`` for an event at ``at`` (one per rule version)."""
        ref = self.refs[model_id]
        rule = ref.rule_at(at)
        key = (model_id, rule.version)
        found = self._payers.get(key)
        if found is None:
            found = self._payers[key] = ref.payer_at(
                at, 0, platform_monetised=self.platform_monetised
            )
        return found

    def price(self, use: Use, now_price: PriceInfo, proposed_price: PriceInfo) -> None:
        """Price ``use`` at ``now_price`` and at ``proposed_price`` (versions of its model)
        and count it in both sets; the model's use count moves on by one."""
        prior = self.prior_uses.get(use.model_id, 0)
        payer = self.payer(use.model_id, use.at)
        self.users.add(use.user_id)
        if proposed_price != now_price:
            self.changed.add(use.model_id)
        for price, book in ((now_price, self.now), (proposed_price, self.proposed)):
            self._count(book, use, price, payer, prior)
        self.prior_uses[use.model_id] = prior + 1

    def _count(self, book: PriceSet, use: Use, price: PriceInfo, payer: Payer, prior: int) -> None:
        quote = rate_card(price).quote_counts(
            use.input_tokens - use.cached_input_tokens,
            use.cached_input_tokens,
            use.output_tokens,
            use.units,
            fixed_charge_ucr=use.fixed_charge_ucr,
        )
        earned = payer.pay(
            tokens=use.input_tokens + use.output_tokens,
            charge_ucr=quote.charge_ucr,
            prior_uses=prior,
            usage_type=use.usage_type,
            payer_id=use.user_id,
        )
        args = (quote.charge_ucr, quote.cost_uusd, quote.cost_ucr, earned.total_ucr)
        book.total.add(*args)
        model = book.by_model.get(use.model_id)
        if model is None:
            model = book.by_model[use.model_id] = Figures()
        model.add(*args)
        balance = book.balances.get(use.user_id)
        if balance is None:
            balance = self.starting_balances.get(use.user_id, 0)
        if quote.charge_ucr > balance:
            book.dry.add(use.user_id)
            for figures in (book.total, model):
                figures.unfunded_events += 1
                figures.unfunded_ucr += quote.charge_ucr
        else:
            balance -= quote.charge_ucr
        book.balances[use.user_id] = balance
