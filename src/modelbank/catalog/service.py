"""Catalog service: create models and resolve references (id, slug or character) to catalog
entries."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelbank.catalog.costs import Mode
from modelbank.catalog.errors import CharacterInUse, CharacterNotFound, ModelExists, ModelNotFound
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
_RESOLVE_CHARACTERS = select(models).where(
    models.c.character_id.in_(bindparam("characters", expanding=True)),
    models.c.is_active.is_(True),
)
MAX_CHARACTER_ID_LENGTH = 200
"""Matches the column; operators' character ids (UUIDs, slugs) fit easily."""


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
    character_id: str | None = None
    """The operator's character this model answers as; unique among active models."""


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

    Raises :class:`ModelExists` (slug taken), :class:`CharacterInUse` (another active model
    has ``character_id``; also when a concurrent create took it first),
    :class:`InvalidInput` (bad slug, demand, character id or a negative access price).
    """
    if not _SLUG.match(spec.slug):
        raise InvalidInput(f"bad model slug {spec.slug!r}: lowercase letters, digits, ._:/-")
    if spec.demand not in ("high", "medium", "low"):
        raise InvalidInput(f"demand must be high, medium or low, got {spec.demand!r}")
    if spec.access_price_ucr < 0:
        raise InvalidInput("access_price_ucr must be ≥ 0")
    if spec.character_id is not None:
        check_character_id(spec.character_id)
    refuse_taken(session, slug=spec.slug, character_id=spec.character_id, model_id=None)
    tier = spec.tier or detect_tier(spec.provider_model_ref or spec.slug, spec.mode)
    with unique_guard(session, slug=spec.slug, character_id=spec.character_id, model_id=None):
        model_id = _insert_model(session, spec, tier)
    return get_model(session, int(model_id))


def _insert_model(session: Session, spec: NewModel, tier: Tier) -> int:
    statement = (
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
    )
    return int(session.connection().execute(statement).scalar_one())


def check_character_id(character_id: str) -> str:
    """Return ``character_id`` if it is 1–200 characters without surrounding white space or
    NUL; raise :class:`InvalidInput`."""
    if (
        not character_id
        or len(character_id) > MAX_CHARACTER_ID_LENGTH
        or character_id != character_id.strip()
        or "\x00" in character_id
    ):
        raise InvalidInput(
            "character_id must be 1–200 characters, without surrounding white space",
            character_id=character_id,
        )
    return character_id


def refuse_taken(
    session: Session, *, slug: str | None, character_id: str | None, model_id: int | None
) -> None:
    """Raise :class:`ModelExists` when ``slug`` is taken, :class:`CharacterInUse` when an
    active model other than ``model_id`` is linked to ``character_id``."""
    conn = session.connection()
    if slug is not None and conn.execute(select(models.c.id).where(models.c.slug == slug)).first():
        raise ModelExists(f"model {slug!r} already exists", slug=slug)
    if character_id is None:
        return
    holder = conn.execute(
        select(models.c.id).where(
            models.c.character_id == character_id,
            models.c.is_active.is_(True),
            models.c.id != (model_id or 0),
        )
    ).scalar()
    if holder is not None:
        raise CharacterInUse(
            f"character {character_id!r} is linked to active model {holder}",
            character_id=character_id,
            model_id=int(holder),
        )


@contextmanager
def unique_guard(
    session: Session, *, slug: str | None, character_id: str | None, model_id: int | None
) -> Iterator[None]:
    """Run a write of the models table in a savepoint: when a concurrent transaction
    committed the same slug or an active link to the same character first (the unique
    indexes refuse the write), raise the typed :class:`ModelExists` /
    :class:`CharacterInUse` instead of the driver's integrity error. Any other integrity
    error is raised as it is. The write must take ``session.connection()`` inside the
    block (a connection taken before it would run outside the savepoint)."""
    try:
        with session.begin_nested():
            yield
    except IntegrityError:
        refuse_taken(session, slug=slug, character_id=character_id, model_id=model_id)
        raise


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
        info = _info(row)
        if info.id in wanted:
            found[info.id] = info
        if info.slug in wanted:
            found[info.slug] = info
    return found


def resolve_characters(session: Session, character_ids: Iterable[str]) -> dict[str, ModelInfo]:
    """The active model linked to each character id, in one query (the partial unique
    index ``uq_models_active_character`` makes it at most one); unknown or unlinked
    characters are absent. For charging by character (DESIGN §6): the usage API and the
    gateway resolve here, then charge the model id."""
    wanted = list(set(character_ids))
    if not wanted:
        return {}
    rows = session.connection().execute(_RESOLVE_CHARACTERS, {"characters": wanted})
    return {row.character_id: _info(row) for row in rows}


def model_for_character(session: Session, character_id: str) -> ModelInfo:
    """The active model linked to ``character_id``. Raises :class:`CharacterNotFound` (no
    active model has it)."""
    found = resolve_characters(session, [character_id]).get(character_id)
    if found is None:
        raise CharacterNotFound(
            f"no active model for character {character_id!r}", character_id=character_id
        )
    return found


def _info(row: Any) -> ModelInfo:
    return ModelInfo(
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
        character_id=row.character_id,
    )
