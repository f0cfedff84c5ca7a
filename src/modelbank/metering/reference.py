"""Reference data of charging, cached per process while the reference epoch stands still
(DESIGN §16: per-batch statements are the cost to cut).

A charge reads data that rarely changes: the model (by id or slug), its price versions, its
earnings rule versions, its beneficiaries, the platform's monetisation switch and the
beneficiaries' earnings accounts. Loading them took seven statements per batch. A
:class:`Snapshot` keeps them per engine, tagged with the reference epoch
(:mod:`modelbank.db.epoch`) it was read at; database triggers move the epoch on every change
to those tables, so a batch that reads a different epoch reloads what it needs. What is in
force at a moment (price, rule) is picked from the versions in memory, so future-dated
versions take effect on time without any write.

Not cached: anything a charge changes (balances, grants, use counts) and premium access
(per user).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.catalog.service import ModelInfo
from modelbank.db import epoch as epochs
from modelbank.earnings import service as earnings
from modelbank.earnings.payer import Payer
from modelbank.earnings.rules import EarningsRule
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.pricing import service as pricing
from modelbank.pricing.ratecard import RateCard, rate_card


@dataclass(frozen=True, slots=True)
class ModelReference:
    """One active model's reference data: the model, every price version and stored rule
    version (any order), and its beneficiaries ((user id, bps))."""

    info: ModelInfo
    prices: tuple[pricing.PriceInfo, ...]
    rules: tuple[tuple[datetime, EarningsRule], ...]
    beneficiaries: tuple[tuple[int, int], ...]

    def card_at(self, at: datetime) -> RateCard | None:
        """The rate card in force at ``at`` (None: no price yet)."""
        info = pricing.in_force_at(self.prices, at)
        return None if info is None else rate_card(info)

    def rule_at(self, at: datetime) -> EarningsRule:
        """The earnings rule in force at ``at``."""
        return earnings.rule_at(self.rules, at)

    def payer_at(self, at: datetime, use_count: int, *, platform_monetised: bool) -> Payer:
        """The earnings :class:`~modelbank.earnings.payer.Payer` of this model for a charge
        at ``at``: the rule in force then, its beneficiaries, ``use_count`` lifetime uses
        before, and the monetisation switches (the platform's, the model's). The one
        builder of payers: the charge path and the price what-if
        (:mod:`modelbank.analytics.whatif`) both call it."""
        term = earnings.Terms(self.info.id, self.rule_at(at), self.beneficiaries, use_count)
        return Payer(
            term, platform_monetised=platform_monetised, model_monetised=self.info.monetised
        )


@dataclass(slots=True)
class Snapshot:
    """Reference data read at ``epoch``. Grows as batches name models it has not loaded;
    replaced when the epoch moves."""

    epoch: int
    monetised: bool
    models: dict[int, ModelReference] = field(default_factory=dict)
    slugs: dict[str, int] = field(default_factory=dict)
    earning_accounts: dict[int, int] = field(default_factory=dict)

    def resolve(self, refs: Iterable[int | str]) -> dict[int | str, ModelInfo]:
        """Model reference → active model, for the refs this snapshot knows."""
        found: dict[int | str, ModelInfo] = {}
        for ref in refs:
            model_id = self.slugs.get(ref) if isinstance(ref, str) else ref
            loaded = None if model_id is None else self.models.get(model_id)
            if loaded is not None:
                found[ref] = loaded.info
        return found


_snapshots: weakref.WeakKeyDictionary[Engine, Snapshot] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def peek(session: Session, refs: Iterable[int | str]) -> Snapshot | None:
    """The cached snapshot of this session's engine if it knows every model of ``refs``,
    without reading anything (the caller checks its epoch later, under its locks); None
    otherwise."""
    engine = session.get_bind()
    snap = _snapshots.get(engine) if isinstance(engine, Engine) else None
    if snap is None:
        return None
    wanted = set(refs)
    return snap if len(snap.resolve(wanted)) == len(wanted) else None


def snapshot(session: Session, refs: Iterable[int | str], *, epoch: int | None = None) -> Snapshot:
    """The snapshot of this session's engine, with every model of ``refs`` that exists and
    is active loaded (unknown refs are simply absent), at ``epoch`` (default: read it)."""
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    current = epochs.current(session) if epoch is None else epoch
    pending = session.info.get(_PENDING)
    snap = pending if pending is not None else _snapshots.get(engine)
    if current is None:  # no epoch row: nothing can be trusted across transactions
        snap = Snapshot(epoch=-1, monetised=earnings.platform_monetised(session))
    elif snap is None or snap.epoch != current:
        # Built from what this transaction sees, which may include its own uncommitted
        # changes (and their epoch): shared with other transactions only once it commits.
        snap = Snapshot(epoch=current, monetised=earnings.platform_monetised(session))
        session.info[_PENDING] = snap
    wanted = set(refs)
    missing = [ref for ref in wanted if ref not in snap.resolve([ref])]
    if missing:
        _load(session, snap, missing)
    return snap


_PENDING = "modelbank.reference.pending"
"""``session.info`` key of a snapshot built in the session's current transaction."""


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    """A snapshot built in a committed transaction is shared with the engine's others."""
    snap = session.info.pop(_PENDING, None)
    engine = session.get_bind()
    if snap is not None and isinstance(engine, Engine):
        with _lock:
            _snapshots[engine] = snap


@event.listens_for(Session, "after_soft_rollback")
def _discard(session: Session, _previous: object) -> None:
    """A rolled-back transaction's snapshot may hold data that never existed: dropped."""
    session.info.pop(_PENDING, None)


def _load(session: Session, snap: Snapshot, refs: list[int | str]) -> None:
    models = catalog.resolve_models(session, refs)
    infos = {info.id: info for info in models.values()}
    if not infos:
        return
    loaded = load_references(session, infos)
    users = {user for ref in loaded.values() for user, _ in ref.beneficiaries}
    accounts = ledger.user_account_ids(
        session, users - snap.earning_accounts.keys(), AccountCode.USER_EARNINGS
    )
    with _lock:
        snap.earning_accounts.update(accounts)
        for model_id, ref in loaded.items():
            snap.models[model_id] = ref
            snap.slugs[ref.info.slug] = model_id


def load_references(session: Session, infos: Mapping[int, ModelInfo]) -> dict[int, ModelReference]:
    """The :class:`ModelReference` of each model of ``infos`` (model id → model, active or
    not), uncached: three queries (price versions, rule versions, beneficiaries). What a
    snapshot holds per model, for readers of history (:mod:`modelbank.analytics.whatif`)."""
    if not infos:
        return {}
    prices = pricing.price_versions(session, infos)
    rules = earnings.rule_versions(session, infos)
    shares = earnings.beneficiaries_of(
        session, {model_id: info.creator_id for model_id, info in infos.items()}
    )
    return {
        model_id: ModelReference(
            info=info,
            prices=tuple(prices.get(model_id, ())),
            rules=tuple(rules.get(model_id, ())),
            beneficiaries=shares[model_id],
        )
        for model_id, info in infos.items()
    }
