"""The what-if over usage already recorded (DESIGN §4, §8): every usage row charged in a
period, priced again under today's prices and under a proposal, read-only.

**Which events.** The usage rows whose ``created_at`` (when they were charged) is in
``[start, end)``, in id order (the order they were decided in), read in batches of
:data:`BATCH_ROWS` by id. At most :data:`MAX_DAYS` days and :data:`MAX_EVENTS` events
(:class:`~modelbank.analytics.whatif.proposal.WhatIfTooLarge` beyond, before any is priced).

**Today's prices** of an event: its model's price version in force now; the version it was
charged at when the model has none now. **Recorded** figures are the row's own (charge,
µUSD cost, earnings, margin): with no price change since, today's prices give them exactly.

**Approximations** (also listed in each report's ``assumptions``):

* Earnings use the rule in force when the event was charged, but the model's *current*
  beneficiaries and monetisation switches (stakes sold during the period are not replayed).
* A model's uses before the period are its usage rows with a smaller id; within the period
  they count in id order (exact when charges were not concurrent).
* An event whose charge differs from its version's rate card was charged an agreed amount
  (a captured hold): that amount stays under both price sets.
* Starting wallet balance of a user = the wallet's posted balance before ``start`` (every
  posted transfer created before it) + every top-up posted to it in ``[start, end)``
  (transfer codes purchase, grant, deposit), all assumed available from the start. Other
  wallet movements of the period (refunds, premium access, holds, expiry sweeps, trades)
  are left out. So a user counted dry ran short even with every top-up of the period in
  hand; one who ran dry only before a top-up arrived is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import RowMapping, and_, case, func, select
from sqlalchemy.orm import Session

from modelbank.analytics.whatif.proposal import (
    InvalidWhatIf,
    Proposal,
    WhatIfTooLarge,
    proposed_price,
)
from modelbank.analytics.whatif.report import WhatIfReport, build_report
from modelbank.analytics.whatif.simulate import Figures, Use, WhatIf
from modelbank.catalog import service as catalog
from modelbank.catalog.service import ModelInfo
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.ledger.codes import AccountCode, TransferCode, TransferFlags
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers
from modelbank.metering import reference
from modelbank.metering.models import usage_events_table as usage
from modelbank.pricing import service as pricing
from modelbank.pricing.ratecard import rate_card
from modelbank.pricing.service import PriceInfo

MAX_DAYS = 366
"""Longest period one what-if covers."""
MAX_EVENTS = 200_000
"""Most usage events one what-if prices: about 16 s at the ~12,000 events/s measured on this
machine (6,590 Azure-trace rows priced in 0.54 s on SQLite), so an HTTP request stays under
a proxy's usual timeout."""
BATCH_ROWS = 5_000
"""Usage rows read per query."""
TOP_UP_CODES = (TransferCode.PURCHASE, TransferCode.GRANT, TransferCode.DEPOSIT)
"""Wallet credits counted as the period's top-ups."""

ASSUMPTIONS = [
    "events: usage rows charged (created_at) in [from, to), in id order",
    "today's prices: each model's price version in force now (the recorded one if none)",
    "earnings: the rule in force when charged, today's beneficiaries and monetisation",
    "popularity: a model's uses before an event are its usage rows with a smaller id",
    "fixed charges (captured holds for an agreed amount) keep their amount in both sets",
    "wallets: posted balance before `from` plus every top-up (purchase, grant, deposit) of"
    " the period, available from the start; other wallet movements are left out",
]

_POSTED = transfers.c.flags.op("&")(int(TransferFlags.PENDING | TransferFlags.VOID_PENDING)) == 0
_COLUMNS = (
    usage.c.id,
    usage.c.user_id,
    usage.c.model_id,
    usage.c.price_version_id,
    usage.c.usage_type,
    usage.c.input_tokens,
    usage.c.cached_input_tokens,
    usage.c.output_tokens,
    usage.c.units,
    usage.c.charge_ucr,
    usage.c.cost_uusd,
    usage.c.earnings_ucr,
    usage.c.margin_ucr,
    usage.c.created_at,
)


def recorded_what_if(
    session: Session,
    start: datetime,
    end: datetime,
    proposal: Proposal,
    *,
    now: datetime | None = None,
    max_events: int | None = None,
) -> WhatIfReport:
    """Price the usage charged in ``[start, end)`` under today's prices and under
    ``proposal`` (module doc). Reads only; the caller's transaction may be read-only.

    Raises :class:`~modelbank.analytics.whatif.proposal.InvalidWhatIf` (empty or reversed
    period, longer than :data:`MAX_DAYS`, a demand naming a model the catalog lacks) and
    :class:`~modelbank.analytics.whatif.proposal.WhatIfTooLarge` (more than ``max_events``
    events, default :data:`MAX_EVENTS`)."""
    now = now or utcnow()
    max_events = MAX_EVENTS if max_events is None else max_events
    if end <= start:
        raise InvalidWhatIf("`to` must be after `from`", start=start.isoformat())
    if end - start > timedelta(days=MAX_DAYS):
        raise InvalidWhatIf(f"a what-if covers at most {MAX_DAYS} days", days=(end - start).days)
    check_demand_models(session, proposal)
    in_period = and_(usage.c.created_at >= start, usage.c.created_at < end)
    conn = session.connection()
    count, first_id = conn.execute(
        select(func.count(), func.min(usage.c.id)).where(in_period)
    ).one()
    if count > max_events:
        raise WhatIfTooLarge(
            f"{count:,} usage events in the period, at most {max_events:,} per what-if:"
            " ask for a shorter period",
            events=int(count),
            limit=max_events,
        )
    model_ids = [
        int(m) for m in conn.execute(select(usage.c.model_id).where(in_period).distinct()).scalars()
    ]
    infos = _models(session, model_ids)
    user_ids = [
        int(u) for u in conn.execute(select(usage.c.user_id).where(in_period).distinct()).scalars()
    ]
    run = WhatIf(
        refs=reference.load_references(session, infos),
        platform_monetised=earnings.platform_monetised(session),
        starting_balances=starting_balances(session, user_ids, start, end),
        prior_uses=_uses_before(session, model_ids, first_id),
    )
    prices = _Prices(run, infos, proposal, now)
    recorded: dict[int, Figures] = {}
    after = 0
    while True:
        rows = conn.execute(
            select(*_COLUMNS)
            .where(in_period, usage.c.id > after)
            .order_by(usage.c.id)
            .limit(BATCH_ROWS)
        ).all()
        if not rows:
            break
        for row in rows:
            _price_row(run, prices, recorded, row._mapping)
        after = rows[-1].id
    return build_report(
        run,
        infos,
        proposal,
        source="recorded",
        recorded=recorded,
        start=start,
        end=end,
        assumptions=ASSUMPTIONS,
    )


class _Prices:
    """Each event's price versions: the one it was charged at (by id), today's of its model
    and the proposed one, each looked up or built once."""

    def __init__(
        self, run: WhatIf, infos: Mapping[int, ModelInfo], proposal: Proposal, now: datetime
    ) -> None:
        self.infos = infos
        self.proposal = proposal
        self.versions = {p.id: p for ref in run.refs.values() for p in ref.prices}
        self.today = {m: pricing.in_force_at(ref.prices, now) for m, ref in run.refs.items()}
        self.proposed: dict[int, PriceInfo] = {}

    def of(self, model_id: int, version_id: int) -> tuple[PriceInfo, PriceInfo, PriceInfo]:
        """(charged, today's, proposed) versions of an event."""
        charged = self.versions[version_id]
        today = self.today[model_id] or charged
        proposed = self.proposed.get(today.id)
        if proposed is None:
            proposed = self.proposed[today.id] = proposed_price(
                today, self.infos[model_id], self.proposal
            )
        return charged, today, proposed


def _price_row(run: WhatIf, prices: _Prices, recorded: dict[int, Figures], r: RowMapping) -> None:
    model_id = int(r["model_id"])
    charged, today, proposed = prices.of(model_id, int(r["price_version_id"]))
    fresh = int(r["input_tokens"]) - int(r["cached_input_tokens"])
    counts = (fresh, int(r["cached_input_tokens"]), int(r["output_tokens"]), int(r["units"]))
    charge = int(r["charge_ucr"])
    fixed = None if rate_card(charged).charge_ucr(*counts) == charge else charge
    run.price(
        Use(
            user_id=int(r["user_id"]),
            model_id=model_id,
            usage_type=str(r["usage_type"]),
            input_tokens=int(r["input_tokens"]),
            cached_input_tokens=counts[1],
            output_tokens=counts[2],
            units=counts[3],
            at=r["created_at"],
            fixed_charge_ucr=fixed,
        ),
        today,
        proposed,
    )
    figures = recorded.get(model_id)
    if figures is None:
        figures = recorded[model_id] = Figures()
    earned = int(r["earnings_ucr"])
    figures.add(charge, int(r["cost_uusd"]), charge - int(r["margin_ucr"]) - earned, earned)


def check_demand_models(session: Session, proposal: Proposal) -> None:
    """Raise :class:`InvalidWhatIf` when a demand override names a model the catalog lacks."""
    if not proposal.demand:
        return
    found = catalog.resolve_models(session, list(proposal.demand), active_only=False)
    missing = sorted(slug for slug in proposal.demand if slug not in found)
    if missing:
        raise InvalidWhatIf(f"demand names an unknown model {missing[0]!r}", model=missing[0])


def _models(session: Session, model_ids: Iterable[int]) -> dict[int, ModelInfo]:
    found = catalog.resolve_models(session, model_ids, active_only=False)
    return {info.id: info for info in found.values()}


def _uses_before(session: Session, model_ids: list[int], first_id: int | None) -> dict[int, int]:
    """Model id → its usage rows with an id below ``first_id`` (uses before the period)."""
    if not model_ids or first_id is None:
        return {}
    rows = session.connection().execute(
        select(usage.c.model_id, func.count())
        .where(usage.c.id < first_id, usage.c.model_id.in_(model_ids))
        .group_by(usage.c.model_id)
    )
    return {int(m): int(n) for m, n in rows}


def starting_balances(
    session: Session, user_ids: list[int], start: datetime, end: datetime
) -> dict[int, int]:
    """User id → µcr their wallet starts the what-if with (module doc: posted balance before
    ``start`` + the top-ups of ``[start, end)``). Two grouped queries."""
    if not user_ids:
        return {}
    wallet = and_(
        accounts.c.code == AccountCode.USER_WALLET.value, accounts.c.owner_id.in_(user_ids)
    )
    top_up = and_(
        transfers.c.created_at >= start,
        transfers.c.created_at < end,
        transfers.c.code.in_([code.value for code in TOP_UP_CODES]),
    )
    counted = and_(_POSTED, (transfers.c.created_at < start) | top_up)
    found: dict[int, int] = dict.fromkeys(user_ids, 0)
    conn = session.connection()
    for leg, sign in ((transfers.c.credit_account_id, 1), (transfers.c.debit_account_id, -1)):
        # Debits of the period are never top-ups: only those before `start` count.
        when = counted if sign == 1 else and_(_POSTED, transfers.c.created_at < start)
        rows = conn.execute(
            select(accounts.c.owner_id, func.sum(case((when, transfers.c.amount), else_=0)))
            .select_from(accounts.join(transfers, leg == accounts.c.id))
            .where(wallet)
            .group_by(accounts.c.owner_id)
        )
        for owner, amount in rows:
            found[int(owner)] += sign * int(amount or 0)
    return found
