"""Catalog service: create models and resolve references (id or slug) to catalog entries."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, or_, select
from sqlalchemy.orm import Session

from modelbank.catalog.costs import Mode
from modelbank.catalog.errors import ModelExists, ModelNotFound
from modelbank.catalog.models import models_table as models
from modelbank.catalog.tiers import Tier, detect_tier
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._:/-]{0,199}$")

# Built once (hot path of every charge; DESIGN §16).
_RESOLVE_ALL = select(models).where(
    or_(
        models.c.id.in_(bindparam("ids", expanding=True)),
        models.c.slug.in_(bindparam("slugs", expanding=True)),
    )
)
_RESOLVE_ACTIVE = _RESOLVE_ALL.where(models.c.is_active.is_(True))


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A catalog entry as the other domains see it."""

    id: int
    slug: str
    name: str
    provider: str
    provider_model_ref: str
    mode: Mode
    category: str
    tier: Tier
    demand: str
    creator_id: int | None
    is_active: bool
    is_premium: bool
    access_price_ucr: int
    monetised: bool = True
    """Whether usage of it earns its beneficiaries anything (DESIGN §7 monetisation switch)."""


@dataclass(frozen=True, slots=True)
class NewModel:
    """What an admin gives to add a model. ``tier`` None: auto-detected from name and mode."""

    slug: str
    name: str
    provider: str
    mode: Mode
    category: str = "General"
    provider_model_ref: str | None = None
    tier: Tier | None = None
    demand: str = "medium"
    creator_id: int | None = None
    is_premium: bool = False
    access_price_ucr: int = 0
    character_id: str | None = None


def create_model(session: Session, spec: NewModel) -> ModelInfo:
    """Add a model to the catalog (without a price: see :mod:`modelbank.pricing.service`).

    Raises :class:`ModelExists` (slug taken), :class:`InvalidInput` (bad slug, demand or a
    negative access price).
    """
    if not _SLUG.match(spec.slug):
        raise InvalidInput(f"bad model slug {spec.slug!r}: lowercase letters, digits, ._:/-")
    if spec.demand not in ("high", "medium", "low"):
        raise InvalidInput(f"demand must be high, medium or low, got {spec.demand!r}")
    if spec.access_price_ucr < 0:
        raise InvalidInput("access_price_ucr must be ≥ 0")
    conn = session.connection()
    if conn.execute(select(models.c.id).where(models.c.slug == spec.slug)).first():
        raise ModelExists(f"model {spec.slug!r} already exists", slug=spec.slug)
    tier = spec.tier or detect_tier(spec.provider_model_ref or spec.slug, spec.mode)
    model_id = conn.execute(
        insert(models)
        .values(
            slug=spec.slug,
            name=spec.name,
            provider=spec.provider,
            provider_model_ref=spec.provider_model_ref or spec.slug,
            mode=spec.mode.value,
            category=spec.category,
            tier=tier.value,
            demand=spec.demand,
            creator_id=spec.creator_id,
            is_active=True,
            is_premium=spec.is_premium,
            access_price_ucr=spec.access_price_ucr,
            character_id=spec.character_id,
            created_at=utcnow(),
        )
        .returning(models.c.id)
    ).scalar_one()
    return get_model(session, int(model_id))


def get_model(session: Session, ref: int | str) -> ModelInfo:
    """A model by id or slug. Raises :class:`ModelNotFound`."""
    found = resolve_models(session, [ref], active_only=False)
    if ref not in found:
        raise ModelNotFound(f"no model {ref!r}", model=ref)
    return found[ref]


def resolve_models(
    session: Session, refs: Iterable[int | str], *, active_only: bool = True
) -> dict[int | str, ModelInfo]:
    """Resolve model references (ids or slugs) in one query; unknown refs are absent."""
    wanted = set(refs)
    ids = [ref for ref in wanted if isinstance(ref, int)]
    slugs = [ref for ref in wanted if isinstance(ref, str)]
    if not wanted:
        return {}
    query = _RESOLVE_ACTIVE if active_only else _RESOLVE_ALL
    found: dict[int | str, ModelInfo] = {}
    for row in session.connection().execute(query, {"ids": ids, "slugs": slugs}):
        info = ModelInfo(
            id=int(row.id),
            slug=row.slug,
            name=row.name,
            provider=row.provider,
            provider_model_ref=row.provider_model_ref,
            mode=Mode(row.mode),
            category=row.category,
            tier=Tier(row.tier),
            demand=row.demand,
            creator_id=row.creator_id,
            is_active=bool(row.is_active),
            is_premium=bool(row.is_premium),
            access_price_ucr=int(row.access_price_ucr),
            monetised=bool(row.monetised),
        )
        if info.id in wanted:
            found[info.id] = info
        if info.slug in wanted:
            found[info.slug] = info
    return found
