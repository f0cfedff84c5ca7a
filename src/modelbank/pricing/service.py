"""Price versions: set a model's price (explicit, or from provider cost and markups) and find
the version in force at a time (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.catalog.tiers import Tier
from modelbank.db.base import utcnow
from modelbank.db.locks import lock_sequence
from modelbank.db.versions import in_force
from modelbank.money import DEFAULT_CREDITS_PER_USD
from modelbank.pricing.errors import InvalidPrice, NoPrice
from modelbank.pricing.formulas import Rates, price_from_cost
from modelbank.pricing.markups import DEMAND_MARKUPS, TIER_MARKUPS, Demand
from modelbank.pricing.models import price_versions_table as versions

ONE = Decimal(1)

# Hot-path statement, built once (DESIGN §16: a statement built per call costs ~100 µs).
_CURRENT_PRICES = in_force(versions)
_INFO_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class PriceInfo:
    """A price version: µcr rates charged (``price_ucr``) and µUSD provider cost
    (``cost_uusd``) of one model from ``effective_from``."""

    id: int
    model_id: int
    version: int
    effective_from: datetime
    price_ucr: Rates
    cost_uusd: Rates
    tier: str
    tier_markup: Decimal
    demand_markup: Decimal
    credits_per_usd: Decimal
    source: str


@dataclass(frozen=True, slots=True)
class Markups:
    """The markup tables in force (defaults: DESIGN §4; overridable in settings)."""

    tiers: Mapping[Tier, Decimal] = field(default_factory=lambda: dict(TIER_MARKUPS))
    demand: Mapping[Demand, Decimal] = field(default_factory=lambda: dict(DEMAND_MARKUPS))
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD


def set_price(
    session: Session,
    model_id: int,
    *,
    tier: Tier,
    demand: Demand | str = Demand.MEDIUM,
    cost_uusd: Rates | None = None,
    explicit_ucr: Rates | None = None,
    markups: Markups | None = None,
    effective_from: datetime | None = None,
    reason: str = "",
) -> PriceInfo:
    """Create the next price version of ``model_id``; return it.

    With ``explicit_ucr`` the admin's µcr rates are used as they are (source ``explicit``);
    otherwise the price is ``cost_uusd × tier markup × demand × credits_per_usd`` (source
    ``cost``; DESIGN §4). The provider cost is stored with the version either way (zero when
    unknown), so margins can be reported. Raises :class:`InvalidPrice` when neither is given.
    """
    if explicit_ucr is None and cost_uusd is None:
        raise InvalidPrice("give a provider cost or an explicit price")
    markups = markups or Markups()
    demand = Demand(demand)
    tier_markup = markups.tiers[tier]
    demand_markup = markups.demand[demand]
    cost = cost_uusd or Rates()
    price, source = _priced(cost, explicit_ucr, tier_markup, demand_markup, markups)
    conn = session.connection()
    version = _next_version(session, conn, model_id)
    values: dict[str, Any] = {
        "model_id": model_id,
        "version": version,
        "effective_from": effective_from or utcnow(),
        **_rate_columns(price, cost),
        "tier": tier.value,
        "tier_markup": tier_markup,
        "demand_markup": demand_markup,
        "credits_per_usd": markups.credits_per_usd,
        "source": source,
        "reason": reason[:200],
        "created_at": utcnow(),
    }
    new_id = conn.execute(insert(versions).values(**values).returning(versions.c.id)).scalar_one()
    audit.record(
        session,
        "price.set",
        "model",
        model_id,
        before=_audited(conn, model_id, version - 1),
        after=_audited(conn, model_id, version),
    )
    return _info({**values, "id": new_id})


def _priced(
    cost: Rates,
    explicit_ucr: Rates | None,
    tier_markup: Decimal,
    demand_markup: Decimal,
    markups: Markups,
) -> tuple[Rates, str]:
    """The µcr rates and their source: ``explicit_ucr`` as given (``explicit``), else the
    provider ``cost`` (µUSD) × markups × credits per USD (``cost``)."""
    if explicit_ucr is not None:
        return explicit_ucr, "explicit"
    return (
        price_from_cost(
            cost,
            tier_markup=tier_markup,
            demand_markup=demand_markup,
            credits_per_usd=markups.credits_per_usd,
        ),
        "cost",
    )


def _next_version(session: Session, conn: Connection, model_id: int) -> int:
    """The model's next price version number, under the model's sequence lock (concurrent
    edits each get the next number)."""
    lock_sequence(session, "price_versions", model_id)  # concurrent edits: next number each
    return (
        int(
            conn.execute(
                select(func.coalesce(func.max(versions.c.version), 0)).where(
                    versions.c.model_id == model_id
                )
            ).scalar_one()
        )
        + 1
    )


def _rate_columns(price: Rates, cost: Rates) -> dict[str, Decimal | None]:
    """A price version's rate columns: ``price`` in µcr, the provider ``cost`` in µUSD."""
    return {
        "input_ucr_per_mtok": price.input_per_mtok,
        "output_ucr_per_mtok": price.output_per_mtok,
        "cache_read_ucr_per_mtok": price.cache_read_per_mtok,
        "per_request_ucr": price.per_request,
        "per_unit_ucr": price.per_unit,
        "input_uusd_per_mtok": cost.input_per_mtok,
        "output_uusd_per_mtok": cost.output_per_mtok,
        "cache_read_uusd_per_mtok": cost.cache_read_per_mtok,
        "per_request_uusd": cost.per_request,
        "per_unit_uusd": cost.per_unit,
    }


_AUDITED = (
    "version",
    "effective_from",
    "source",
    "tier",
    "input_ucr_per_mtok",
    "output_ucr_per_mtok",
    "cache_read_ucr_per_mtok",
    "per_request_ucr",
    "per_unit_ucr",
    "input_uusd_per_mtok",
    "output_uusd_per_mtok",
    "reason",
)


def _audited(conn: Any, model_id: int, version: int) -> dict[str, Any] | None:
    """A price version as the audit log shows it (None when there is no such version)."""
    row = (
        conn.execute(
            select(*(versions.c[k] for k in _AUDITED)).where(
                versions.c.model_id == model_id, versions.c.version == version
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


_INFO_CACHE: dict[tuple[Any, ...], PriceInfo] = {}
"""Row content → PriceInfo (keyed by content, not id: safe across databases)."""


def current_prices(
    session: Session, model_ids: Iterable[int], *, at: datetime | None = None
) -> dict[int, PriceInfo]:
    """The version in force at ``at`` (default now) for each model: the highest version
    whose ``effective_from`` ≤ at. Models without one are absent."""
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    at = at or utcnow()
    rows = session.connection().execute(_CURRENT_PRICES, {"ids": ids, "at": at})
    found: dict[int, PriceInfo] = {}
    for row in rows:
        # Price versions are immutable: a row's content maps to one PriceInfo, so it is
        # built (and its rates validated) once per process, not once per charge.
        key = tuple(row)
        info = _INFO_CACHE.get(key)
        if info is None:
            if len(_INFO_CACHE) >= _INFO_CACHE_SIZE:
                _INFO_CACHE.clear()
            info = _INFO_CACHE[key] = _info(row._mapping)
        found[info.model_id] = info
    return found


_ALL_VERSIONS = (
    select(versions)
    .where(versions.c.model_id.in_(bindparam("ids", expanding=True)))
    .order_by(versions.c.model_id, versions.c.version)
)


def price_versions(session: Session, model_ids: Iterable[int]) -> dict[int, list[PriceInfo]]:
    """Every price version of each model, oldest first (one query); models without any
    are absent. With :func:`in_force_at` it answers what :func:`current_prices` does, from
    data a caller may keep while nothing changes (:mod:`modelbank.db.epoch`)."""
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    found: dict[int, list[PriceInfo]] = {}
    for row in session.connection().execute(_ALL_VERSIONS, {"ids": ids}):
        key = tuple(row)
        info = _INFO_CACHE.get(key)
        if info is None:
            if len(_INFO_CACHE) >= _INFO_CACHE_SIZE:
                _INFO_CACHE.clear()
            info = _INFO_CACHE[key] = _info(row._mapping)
        found.setdefault(info.model_id, []).append(info)
    return found


def in_force_at(history: Sequence[PriceInfo], at: datetime) -> PriceInfo | None:
    """The version of ``history`` (one model's, any order) in force at ``at``: the highest
    version whose ``effective_from`` ≤ at (as :func:`current_prices`); None before the
    first."""
    best: PriceInfo | None = None
    for info in history:
        if info.effective_from <= at and (best is None or info.version > best.version):
            best = info
    return best


def current_price(session: Session, model_id: int, *, at: datetime | None = None) -> PriceInfo:
    """The version in force for one model. Raises :class:`NoPrice`."""
    found = current_prices(session, [model_id], at=at)
    if model_id not in found:
        raise NoPrice(f"model {model_id} has no price in force", model_id=model_id)
    return found[model_id]


def price_history(session: Session, model_id: int) -> list[PriceInfo]:
    """Every version of a model's price, oldest first."""
    rows = session.connection().execute(
        select(versions).where(versions.c.model_id == model_id).order_by(versions.c.version)
    )
    return [_info(row._mapping) for row in rows]


def _info(row: Mapping[Any, Any]) -> PriceInfo:
    return PriceInfo(
        id=int(row["id"]),
        model_id=int(row["model_id"]),
        version=int(row["version"]),
        effective_from=row["effective_from"],
        price_ucr=Rates(
            input_per_mtok=row["input_ucr_per_mtok"],
            output_per_mtok=row["output_ucr_per_mtok"],
            cache_read_per_mtok=row["cache_read_ucr_per_mtok"],
            per_request=row["per_request_ucr"],
            per_unit=row["per_unit_ucr"],
        ),
        cost_uusd=Rates(
            input_per_mtok=row["input_uusd_per_mtok"],
            output_per_mtok=row["output_uusd_per_mtok"],
            cache_read_per_mtok=row["cache_read_uusd_per_mtok"],
            per_request=row["per_request_uusd"],
            per_unit=row["per_unit_uusd"],
        ),
        tier=row["tier"],
        tier_markup=row["tier_markup"],
        demand_markup=row["demand_markup"],
        credits_per_usd=row["credits_per_usd"],
        source=row["source"],
    )
