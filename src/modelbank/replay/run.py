"""The replay loop (DESIGN §15): charge a trace's requests in batches through the metering
pipeline, admitting the users and models it names as they appear and letting users who run
low top up, then verify the ledger."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from modelbank.catalog import service as catalog
from modelbank.catalog.costs import IMAGE_MODES, CostImport
from modelbank.db.engine import transaction
from modelbank.ledger import invariants
from modelbank.metering import service as metering
from modelbank.replay.autotopups import AutoTopUps
from modelbank.replay.cast import StartingCredits, admit_users
from modelbank.replay.catalog import CatalogEntry, ensure_models, entry_from_source
from modelbank.replay.report import ReplayReport
from modelbank.replay.topups import TopUpPolicy, buy_and_confirm, package_id
from modelbank.traces.assign import Assigner
from modelbank.traces.readers import TraceRequest
from modelbank.wallets import grants

BATCH_EVENTS = metering.MAX_BATCH_EVENTS
"""Events charged per transaction: the batch path is ~5× faster than one per transaction."""
INSUFFICIENT_FUNDS = "insufficient_funds"
MODEL_NOT_FOUND = "model_not_found"


@dataclass
class _Cast:
    """Who and what the replay knows so far, and how newcomers join."""

    user_ids: dict[str, int]
    start: StartingCredits
    costs: CostImport | None
    categories: dict[str, str] = field(default_factory=dict)
    """slug → category of every active model met so far."""
    image_models: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    """Slugs neither the catalog nor the price source knows (their events are rejected)."""

    def admit(
        self, factory: sessionmaker[Session], report: ReplayReport, named: Sequence[tuple[str, str]]
    ) -> None:
        """Create the users a batch names for the first time (by external id, with their
        starting credits) and resolve its new model slugs: an active catalog model, else one
        created from the price source when it knows the model, else unknown."""
        new_users = list(dict.fromkeys(u for u, _ in named if u not in self.user_ids))
        new_models = list(
            dict.fromkeys(m for _, m in named if m not in self.categories and m not in self.unknown)
        )
        if not new_users and not new_models:
            return
        with transaction(factory) as session:
            if new_users:
                ids, created = admit_users(session, new_users, self.start)
                self.user_ids.update(ids)
                report.users_created += len(created)
            if new_models:
                self._resolve_models(session, report, new_models)

    def _resolve_models(self, session: Session, report: ReplayReport, slugs: list[str]) -> None:
        found = catalog.resolve_models(session, slugs)  # active models only
        entries: list[CatalogEntry] = []
        for slug in slugs:
            info = found.get(slug)
            entry = None if info is not None else entry_from_source(self.costs, slug)
            if info is not None:
                self._know(slug, info.category, info.mode in IMAGE_MODES)
            elif entry is not None:
                entries.append(entry)
            else:
                self.unknown.add(slug)
        created = set(ensure_models(session, entries, self.user_ids))
        for entry in entries:
            if entry.slug in created:
                report.models_created.append(entry.slug)
                self._know(entry.slug, entry.category, entry.mode in IMAGE_MODES)
            else:  # the slug exists but is inactive: its events are rejected
                self.unknown.add(entry.slug)

    def _know(self, slug: str, category: str, image: bool) -> None:
        self.categories[slug] = category
        if image:
            self.image_models.add(slug)


class _TopUps:
    """Applies a :class:`TopUpPolicy` after each batch: buy, confirm, retry the refused."""

    def __init__(
        self, factory: sessionmaker[Session], policy: TopUpPolicy, key_prefix: str
    ) -> None:
        self.factory = factory
        self.policy = policy
        self.key_prefix = key_prefix
        self.package = package_id(factory, policy.package)
        self.bought: Counter[int] = Counter()  # user id → packages bought in this replay
        self.auto = AutoTopUps(
            factory,
            percent=policy.auto_percent,
            package=self.package,
            threshold_ucr=policy.low_balance_ucr,
            max_per_month=policy.max_per_user,
            key_prefix=key_prefix,
        )

    def settle(
        self,
        events: Sequence[metering.UsageEvent],
        results: list[metering.ChargeResult],
        report: ReplayReport,
    ) -> None:
        """Top up the users of ``events`` who ran low or were refused, then charge their
        refused events once more; ``results`` is updated in place. Repeats while a retry is
        refused again and its user may still buy."""
        pending: Sequence[int] = range(len(events))
        self.auto.enrol(e.user_id for e in events)
        while True:
            refused = [i for i in pending if results[i].error_code == INSUFFICIENT_FUNDS]
            low = [
                i
                for i in pending
                if results[i].status == "charged"
                and (results[i].balance_ucr or 0) < self.policy.low_balance_ucr
            ]
            buyers = dict.fromkeys(
                events[i].user_id
                for i in sorted([*refused, *low])
                if events[i].user_id not in self.auto.users
            )
            paid = {user for user in buyers if self._buy(user, report)}
            paid |= self.auto.settle(report)
            retry = [i for i in refused if events[i].user_id in paid]
            if not retry:
                return
            with transaction(self.factory) as session:
                again = metering.charge_batch(session, [events[i] for i in retry])
            for index, result in zip(retry, again, strict=True):
                results[index] = result
                report.retried += result.status == "charged"
            pending = retry  # only the retried ones may need another round

    def _buy(self, user_id: int, report: ReplayReport) -> bool:
        count = self.bought[user_id]
        if count >= self.policy.max_per_user:
            return False
        top_up = buy_and_confirm(
            self.factory,
            user_id,
            self.package,
            reference=f"{self.key_prefix}:top-up:{user_id}:{count + 1}",
        )
        self.bought[user_id] = count + 1
        report.top_ups += 1
        report.top_up_users += count == 0
        report.top_up_credits_ucr += top_up.credits_ucr
        report.top_up_paid_uusd += top_up.price_uusd
        return True


def replay(
    factory: sessionmaker[Session],
    requests: Sequence[TraceRequest],
    *,
    assigner: Assigner,
    user_ids: dict[str, int],
    key_prefix: str,
    image_models: frozenset[str] = frozenset(),
    on_batch: Callable[[int], None] | None = None,
    credits_per_usd: Decimal = Decimal(100),
    newcomers: StartingCredits | None = None,
    costs: CostImport | None = None,
    top_ups: TopUpPolicy | None = None,
    batch_events: int = BATCH_EVENTS,
) -> ReplayReport:
    """Charge every request, ``batch_events`` (at most :data:`BATCH_EVENTS`) per transaction,
    and verify the ledger.

    Request *i* goes to ``assigner.assign(i, request)``; its idempotency key is
    ``f"{key_prefix}:{i}"``, so replaying the same trace with the same prefix charges
    nothing twice (the events come back ``replayed``). A user name not in ``user_ids`` is
    created when first met (by external id) with ``newcomers``' credits (default none). A
    model slug is looked up in the catalog when first met; a slug it lacks is created from
    ``costs`` when that source prices it, otherwise its events are rejected
    (``model_not_found``, counted per slug in ``unknown_models``). Image-mode models are
    charged one ``image_generation`` unit per request (``image_models`` adds slugs).
    With ``top_ups``, users who run low buy credits (:class:`TopUpPolicy`). ``on_batch(n)``
    is called after each committed batch of ``n`` events (progress bars).
    """
    report = ReplayReport(events=len(requests), credits_per_usd=credits_per_usd)
    cast = _Cast(
        dict(user_ids),
        newcomers or StartingCredits(0, key_prefix, credits_per_usd, bonus_ucr=0),
        costs,
        image_models=set(image_models),
    )
    buying = _TopUps(factory, top_ups, key_prefix) if top_ups is not None else None
    started = time.perf_counter()
    step = max(1, min(batch_events, BATCH_EVENTS))
    for start in range(0, len(requests), step):
        chunk = requests[start : start + step]
        named = [assigner.assign(start + offset, request) for offset, request in enumerate(chunk)]
        cast.admit(factory, report, named)
        events = [
            _event(cast, f"{key_prefix}:{start + offset}", user, model, request)
            for offset, (request, (user, model)) in enumerate(zip(chunk, named, strict=True))
        ]
        with transaction(factory) as session:
            results = metering.charge_batch(session, events)
        if buying is not None:
            buying.settle(events, results, report)
        for (_, slug), result in zip(named, results, strict=True):
            report.tally(slug, cast.categories.get(slug, "General"), result)
            if result.error_code == MODEL_NOT_FOUND and slug in cast.unknown:
                report.unknown_models[slug] += 1
        if on_batch is not None:
            on_batch(len(chunk))
    report.seconds = Decimal(str(round(time.perf_counter() - started, 6)))
    _check_ledger(factory, report)
    return report


def _event(
    cast: _Cast, key: str, user: str, model: str, request: TraceRequest
) -> metering.UsageEvent:
    image = model in cast.image_models
    return metering.UsageEvent(
        idempotency_key=key,
        user_id=cast.user_ids[user],
        model=model,
        usage_type="image_generation" if image else "chat",
        input_tokens=0 if image else request.input_tokens,
        output_tokens=0 if image else request.output_tokens,
        cached_input_tokens=0 if image else request.cached_input_tokens,
        units=1 if image else 0,
        occurred_at=request.occurred_at,
    )


def _check_ledger(factory: sessionmaker[Session], report: ReplayReport) -> None:
    with transaction(factory) as session:
        violations: list[object] = [*invariants.check(session), *grants.check(session)]
        recognised = grants.recognition(session)
    report.ledger_ok = not violations
    report.ledger_violations = [str(v) for v in violations]
    report.burned_purchased_ucr = recognised.purchased_ucr
    report.burned_bonus_ucr = recognised.bonus_ucr
    report.recognised_uusd = recognised.purchased_basis_uusd


def replay_catalog(
    factory: sessionmaker[Session],
    requests: Sequence[TraceRequest],
    *,
    entries: Sequence[CatalogEntry],
    user_names: Sequence[str],
    credits_ucr: int,
    seed: int,
    key_prefix: str,
    on_batch: Callable[[int], None] | None = None,
    credits_per_usd: Decimal = Decimal(100),
    costs: CostImport | None = None,
    top_ups: TopUpPolicy | None = None,
    batch_events: int = BATCH_EVENTS,
) -> ReplayReport:
    """Set up ``user_names`` (each granted ``credits_ucr`` purchased µcr, idempotent per
    ``key_prefix``) and the catalog ``entries``, then :func:`replay` ``requests`` over them,
    ranked in the given orders for the Zipf assignment from ``seed``. Users and models the
    trace itself names join as they appear (:func:`replay`; ``costs`` prices new models)."""
    start = StartingCredits(credits_ucr, key_prefix, credits_per_usd)
    with transaction(factory) as session:
        user_ids, created = admit_users(session, user_names, start)
        models = ensure_models(session, entries, user_ids)
    report = replay(
        factory,
        requests,
        assigner=Assigner(list(user_names), [e.slug for e in entries], seed=seed),
        user_ids=user_ids,
        key_prefix=key_prefix,
        on_batch=on_batch,
        credits_per_usd=credits_per_usd,
        newcomers=start,
        costs=costs,
        top_ups=top_ups,
        batch_events=batch_events,
    )
    report.users_created += len(created)
    report.models_created[:0] = models
    return report
