"""``modelbank replay TRACE --what-if …``: a trace's events priced under today's prices and
under proposed ones, without writing anything (DESIGN §4, §15; issue 12 item 3).

The replay's set-up runs as the replay runs it (:mod:`modelbank.replay`: its users with
their starting credits, its catalog, the trace's own users and the models the price source
knows, the Zipf assignment from the seed), but inside one transaction that is rolled back
at the end: the database is left exactly as it was. The events the replay would charge are
then priced by :func:`modelbank.analytics.whatif.trace_what_if` (the charge path's rate card
and earnings payer), each user's wallet starting from what the replay grants it (its
starting credits, or its balance when the user exists already). Top-ups (``--top-up``) are
not simulated: a user who runs dry stays dry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from modelbank.analytics.whatif import Proposal, WhatIfReport
from modelbank.analytics.whatif import trace_what_if as price_events
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import IMAGE_MODES, CostImport
from modelbank.metering.events import UsageEvent
from modelbank.replay import (
    CatalogEntry,
    StartingCredits,
    admit_users,
    ensure_models,
    entry_from_source,
)
from modelbank.traces.assign import Assigner
from modelbank.traces.readers import TraceRequest


def what_if_replay(
    factory: sessionmaker[Session],
    requests: Sequence[TraceRequest],
    proposal: Proposal,
    *,
    entries: Sequence[CatalogEntry],
    user_names: Sequence[str],
    credits_ucr: int,
    seed: int,
    key_prefix: str,
    credits_per_usd: Decimal = Decimal(100),
    costs: CostImport | None = None,
) -> tuple[WhatIfReport, Counter[str]]:
    """Price the events :func:`modelbank.replay.replay_catalog` would charge with the same
    arguments, under today's prices and under ``proposal``; write nothing. Returns the
    report and the events left out by reason (``model_not_found``: neither the catalog nor
    the price source knows the model). Raises
    :class:`~modelbank.analytics.whatif.InvalidWhatIf` (a demand naming an unknown model)."""
    start = StartingCredits(credits_ucr, key_prefix, credits_per_usd)
    with factory() as session:
        session.begin()
        try:
            events = _events(session, requests, entries, user_names, start, seed, costs)
            return price_events(session, events, proposal)
        finally:
            session.rollback()  # the set-up was only for pricing: nothing stays


def _events(
    session: Session,
    requests: Sequence[TraceRequest],
    entries: Sequence[CatalogEntry],
    user_names: Sequence[str],
    start: StartingCredits,
    seed: int,
    costs: CostImport | None,
) -> list[UsageEvent]:
    """The replay's users and models set up in ``session``, and its events."""
    user_ids, _ = admit_users(session, user_names, start)
    ensure_models(session, entries, user_ids)
    assigner = Assigner(list(user_names), [e.slug for e in entries], seed=seed)
    named = [assigner.assign(i, request) for i, request in enumerate(requests)]
    newcomers = [u for u in dict.fromkeys(u for u, _ in named) if u not in user_ids]
    if newcomers:
        user_ids.update(admit_users(session, newcomers, start)[0])
    slugs = list(dict.fromkeys(m for _, m in named))
    found = catalog.resolve_models(session, slugs)
    sourced = [entry_from_source(costs, slug) for slug in slugs if slug not in found]
    ensure_models(session, [e for e in sourced if e is not None], user_ids)
    found = catalog.resolve_models(session, slugs)
    images = {slug for slug, info in found.items() if info.mode in IMAGE_MODES}
    return [
        UsageEvent(
            idempotency_key=f"what-if:{i}",
            user_id=user_ids[user],
            model=model,
            usage_type="image_generation" if model in images else "chat",
            input_tokens=0 if model in images else request.input_tokens,
            output_tokens=0 if model in images else request.output_tokens,
            cached_input_tokens=0 if model in images else request.cached_input_tokens,
            units=1 if model in images else 0,
            occurred_at=request.occurred_at,
        )
        for i, (request, (user, model)) in enumerate(zip(requests, named, strict=True))
    ]
