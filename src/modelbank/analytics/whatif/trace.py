"""The what-if over events not yet charged (a replayed trace, DESIGN §15): each event priced
as a charge *now* would price it (the price version and earnings rule in force now, each
model's lifetime uses so far), and under a proposal. Reads only.

Starting wallet balances are the wallets' available balances now (posted − held), what the
charge path checks an event against; run it after a replay's users were granted their
credits (in a transaction rolled back afterwards) and they are the replay's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from modelbank.analytics.whatif.proposal import Proposal, proposed_price
from modelbank.analytics.whatif.recorded import check_demand_models
from modelbank.analytics.whatif.report import WhatIfReport, build_report
from modelbank.analytics.whatif.simulate import Use, WhatIf
from modelbank.catalog import service as catalog
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.metering import reference
from modelbank.metering.events import UsageEvent
from modelbank.pricing import service as pricing

ASSUMPTIONS = [
    "events: the trace's, in order, priced as if charged now (price and earnings rule in"
    " force now, each model's lifetime uses so far)",
    "wallets: each user's available balance before the replay (its granted credits)",
]


def trace_what_if(
    session: Session,
    events: Sequence[UsageEvent],
    proposal: Proposal,
    *,
    now: datetime | None = None,
) -> tuple[WhatIfReport, Counter[str]]:
    """Price ``events`` (user ids, models by id or slug) under today's prices and under
    ``proposal``. Returns the report and the events left out by reason (``model_not_found``,
    ``no_price``, ``user_not_found``). Raises
    :class:`~modelbank.analytics.whatif.proposal.InvalidWhatIf` when a demand names a model
    the catalog lacks."""
    now = now or utcnow()
    check_demand_models(session, proposal)
    found = catalog.resolve_models(session, {e.model for e in events})
    infos = {info.id: info for info in found.values()}
    refs = reference.load_references(session, infos)
    wallets = _wallets(session, {e.user_id for e in events})
    stats = earnings.model_stats(session, infos)
    run = WhatIf(
        refs=refs,
        platform_monetised=earnings.platform_monetised(session),
        starting_balances=wallets,
        prior_uses={s.model_id: s.use_count for s in stats},
    )
    today = {m: pricing.in_force_at(ref.prices, now) for m, ref in refs.items()}
    proposed = {m: proposed_price(p, infos[m], proposal) for m, p in today.items() if p is not None}
    left_out: Counter[str] = Counter()
    for event in events:
        info = found.get(event.model)
        price = None if info is None else today[info.id]
        if info is None or price is None or event.user_id not in wallets:
            reason = (
                "model_not_found"
                if info is None
                else "no_price"
                if price is None
                else "user_not_found"
            )
            left_out[reason] += 1
            continue
        run.price(
            Use(
                user_id=event.user_id,
                model_id=info.id,
                usage_type=event.usage_type,
                input_tokens=event.input_tokens,
                cached_input_tokens=event.cached_input_tokens,
                output_tokens=event.output_tokens,
                units=event.units,
                at=now,
                fixed_charge_ucr=event.charge_ucr,
            ),
            price,
            proposed[info.id],
        )
    report = build_report(run, infos, proposal, source="trace", assumptions=ASSUMPTIONS)
    return report, left_out


def _wallets(session: Session, user_ids: set[int]) -> dict[int, int]:
    """User id → available µcr of their wallet (users without a wallet are absent)."""
    accounts = ledger.user_account_ids(session, user_ids, AccountCode.USER_WALLET)
    return {
        user: ledger.get_balance(session, account).available for user, account in accounts.items()
    }
