"""Reading resources (DESIGN §9): the :class:`ResourceInfo` view (never the key), scoped
reads, row locks, and the deposit arithmetic every other pool module uses.

Money: ``*_uusd`` micro-dollars of provider spend, ``*_ucr`` micro-credits, all integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.catalog.models import models_table as catalog_models
from modelbank.money import div_half_even, mul, round_half_even
from modelbank.pool.errors import PoolSettingsInvalid, ResourceNotFound
from modelbank.pool.models import resource_models_table as served
from modelbank.pool.models import resources_table as resources

BPS = 10_000
"""Basis points in a whole."""
DEPOSIT_CREDIT_BPS_KEY = "pool.deposit_credit_bps"
"""Platform setting: share of the pool part's credit value credited to the depositor."""
FEE_BPS_KEY = "pool.fee_bps"
"""Platform setting: share of the pool part's credit value kept as the platform's fee."""
DEFAULT_DEPOSIT_CREDIT_BPS = 9_000
"""DESIGN §9: the depositor is credited 90 % of the pool part's credit value."""
DEFAULT_FEE_BPS = 1_000
"""DESIGN §9: 10 % of it goes to ``platform_fees``."""
LIST_LIMIT = 500
"""Most resources one listing returns (pages beyond it by cursor)."""


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A catalog model a resource serves, and the upstream's name for it."""

    model_id: int
    slug: str
    upstream_model: str


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """A resource as shown to its owner and admins: the key only as mask and fingerprint.

    ``owner_id`` None: a platform resource (no deposit credit). ``pool_quota_uusd`` is the
    part of the quota that serves every user and was credited at deposit."""

    id: int
    owner_id: int | None
    provider: str
    base_url: str
    status: str
    status_reason: str | None
    key_mask: str
    key_fingerprint: str
    key_id: str
    quota_uusd: int
    market_quota_uusd: int
    consumed_uusd: int
    deposit_credit_ucr: int
    fee_ucr: int
    clawed_back_ucr: int
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    ended_at: datetime | None
    models: tuple[ServedModel, ...] = ()
    moved_credit_ucr: int = 0
    """Deposit credit reversed when quota moved to the market part."""

    @property
    def pool_credit_ucr(self) -> int:
        """The deposit credit of the current pool part: deposit − moved (µcr)."""
        return self.deposit_credit_ucr - self.moved_credit_ucr

    @property
    def pool_quota_uusd(self) -> int:
        """quota − market part: the provider spend that serves the pool (µUSD)."""
        return self.quota_uusd - self.market_quota_uusd

    @property
    def is_platform(self) -> bool:
        return self.owner_id is None


def deposit_split(
    pool_quota_uusd: int, credits_per_usd: Decimal, credit_bps: int, fee_bps: int
) -> tuple[int, int]:
    """(depositor's credit, platform fee) in µcr for a pool part of ``pool_quota_uusd`` µUSD
    (DESIGN §9): its credit value is ``pool × credits_per_usd`` µcr (1 µUSD is worth
    ``credits_per_usd`` µcr, DESIGN §2); each share is that value × bps / 10,000, computed
    exactly and rounded once, half-even. The market part is never credited (it is sold
    through the marketplace). Raises :class:`PoolSettingsInvalid` for rates outside
    0…10,000 or summing past 10,000."""
    if not (0 <= credit_bps <= BPS and 0 <= fee_bps <= BPS and credit_bps + fee_bps <= BPS):
        raise PoolSettingsInvalid(
            f"pool rates out of range: deposit credit {credit_bps} bps, fee {fee_bps} bps"
            " (each 0…10000, together at most 10000)",
            deposit_credit_bps=credit_bps,
            fee_bps=fee_bps,
        )
    value = mul(pool_quota_uusd, credits_per_usd)
    credit = round_half_even(mul(value, credit_bps) / BPS)
    fee = round_half_even(mul(value, fee_bps) / BPS)
    return credit, fee


def unconsumed_credit(deposit_credit_ucr: int, pool_quota_uusd: int, consumed_uusd: int) -> int:
    """The part of a deposit credit whose quota was not used (µcr): ``deposit × (pool −
    consumed, floored at 0) / pool``, rounded once, half-even (``money.div_half_even``). This
    is what a clawback reverses; ``deposit − this`` is the consumed share. 0 when the pool
    part is 0 (nothing was credited)."""
    if pool_quota_uusd <= 0 or deposit_credit_ucr <= 0:
        return 0
    left = max(pool_quota_uusd - consumed_uusd, 0)
    return div_half_even(deposit_credit_ucr * left, pool_quota_uusd)


def consumed_share(deposit_credit_ucr: int, pool_quota_uusd: int, consumed_uusd: int) -> int:
    """The part of a deposit credit earned by quota already consumed (µcr): the deposit
    minus :func:`unconsumed_credit`."""
    return deposit_credit_ucr - unconsumed_credit(
        deposit_credit_ucr, pool_quota_uusd, consumed_uusd
    )


# ---------------------------------------------------------------- reading


def _info(row: Any, models: Sequence[ServedModel] = ()) -> ResourceInfo:
    return ResourceInfo(
        id=int(row.id),
        owner_id=None if row.owner_id is None else int(row.owner_id),
        provider=row.provider,
        base_url=row.base_url,
        status=row.status,
        status_reason=row.status_reason,
        key_mask=row.key_mask,
        key_fingerprint=row.key_fingerprint,
        key_id=row.key_id,
        quota_uusd=int(row.quota_uusd),
        market_quota_uusd=int(row.market_quota_uusd),
        consumed_uusd=int(row.consumed_uusd),
        deposit_credit_ucr=int(row.deposit_credit_ucr),
        fee_ucr=int(row.fee_ucr),
        clawed_back_ucr=int(row.clawed_back_ucr),
        created_at=row.created_at,
        updated_at=row.updated_at,
        activated_at=row.activated_at,
        ended_at=row.ended_at,
        models=tuple(models),
        moved_credit_ucr=int(row.moved_credit_ucr),
    )


_COLUMNS = [c for c in resources.c if c.name != "key_encrypted"]
"""Every column but the sealed key: reads that show a resource never load it."""


def _served(session: Session, ids: Sequence[int]) -> dict[int, list[ServedModel]]:
    if not ids:
        return {}
    rows = session.connection().execute(
        select(
            served.c.resource_id, served.c.model_id, served.c.upstream_model, catalog_models.c.slug
        )
        .join(catalog_models, catalog_models.c.id == served.c.model_id)
        .where(served.c.resource_id.in_(list(ids)))
        .order_by(served.c.resource_id, served.c.model_id)
    )
    out: dict[int, list[ServedModel]] = {}
    for row in rows:
        out.setdefault(int(row.resource_id), []).append(
            ServedModel(int(row.model_id), row.slug, row.upstream_model)
        )
    return out


def visible(owner_id: int | None, *, admin: bool) -> Any:
    """The one "visible to this caller" filter (STYLE §10): every resource for an admin;
    the resources of ``owner_id`` otherwise (a platform resource is nobody's)."""
    if admin:
        return resources.c.id.is_not(None)
    return resources.c.owner_id == owner_id


def get_resource(
    session: Session,
    resource_id: int,
    *,
    owner_id: int | None = None,
    admin: bool = True,
    lock: bool = False,
) -> ResourceInfo:
    """A resource, if the caller may see it (``admin``, or it belongs to ``owner_id``).
    ``lock``: under a row lock (``FOR UPDATE`` on PostgreSQL; SQLite's writer lock). Raises
    :class:`ResourceNotFound` (also for another user's resource: not revealed)."""
    query = select(*_COLUMNS).where(resources.c.id == resource_id, visible(owner_id, admin=admin))
    if lock:
        query = query.with_for_update()
    row = session.connection().execute(query).first()
    if row is None:
        raise ResourceNotFound(f"no resource {resource_id}", resource_id=resource_id)
    return _info(row, _served(session, [int(row.id)]).get(int(row.id), []))


def list_resources(
    session: Session,
    owner_id: int | None,
    *,
    platform: bool = False,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[ResourceInfo]:
    """Resources by id: those of ``owner_id``, or (``platform``) the platform's own, or
    (``owner_id`` None and not ``platform``) all of them; optionally of one ``status``; at
    most ``limit`` (≤ :data:`LIST_LIMIT`) after ``after_id``."""
    query = select(*_COLUMNS).where(resources.c.id > after_id)
    if platform:
        query = query.where(resources.c.owner_id.is_(None))
    elif owner_id is not None:
        query = query.where(resources.c.owner_id == owner_id)
    if status is not None:
        query = query.where(resources.c.status == status)
    rows = (
        session.connection()
        .execute(query.order_by(resources.c.id).limit(min(limit, LIST_LIMIT)))
        .all()
    )
    models = _served(session, [int(r.id) for r in rows])
    return [_info(r, models.get(int(r.id), [])) for r in rows]


def sealed_key(session: Session, resource_id: int) -> tuple[str, str]:
    """(sealed token, key id) of a resource, for the router's :func:`~modelbank.pool.keys.reveal`.
    Raises :class:`ResourceNotFound`."""
    row = (
        session.connection()
        .execute(
            select(resources.c.key_encrypted, resources.c.key_id).where(
                resources.c.id == resource_id
            )
        )
        .first()
    )
    if row is None:
        raise ResourceNotFound(f"no resource {resource_id}", resource_id=resource_id)
    return row.key_encrypted, row.key_id
