"""Admin edits of the catalog and listing with filters (DESIGN §4).

Prices are not edited here: a price change is a new version (:mod:`modelbank.pricing`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.catalog.costs import Mode
from modelbank.catalog.models import models_table as models
from modelbank.catalog.service import (
    ModelInfo,
    check_character_id,
    get_model,
    refuse_taken,
    resolve_models,
    unique_guard,
)
from modelbank.catalog.tiers import Tier
from modelbank.errors import InvalidInput

DEMANDS = ("high", "medium", "low")


@dataclass(frozen=True, slots=True)
class ModelChanges:
    """Fields an admin may change; None leaves a field as it is."""

    name: str | None = None
    category: str | None = None
    tier: Tier | None = None
    demand: str | None = None
    is_premium: bool | None = None
    access_price_ucr: int | None = None
    creator_id: int | None = None
    is_active: bool | None = None
    character_id: str | None = None
    """Link the model to this character (unique among active models)."""
    unlink_character: bool = False
    """Remove the model's character link (``character_id`` must then be None)."""


def update_model(session: Session, model_id: int, changes: ModelChanges) -> ModelInfo:
    """Apply ``changes`` to a model; return it as it now is.

    Raises :class:`~modelbank.catalog.errors.ModelNotFound`,
    :class:`~modelbank.catalog.errors.CharacterInUse` (the model would be active and
    linked to a character another active model has: a new link, or a reactivation),
    :class:`InvalidInput` (bad demand, negative access price, empty name, bad character id).
    """
    current = get_model(session, model_id)
    values = _values(changes)
    if values:
        active = bool(values.get("is_active", current.is_active))
        character = values.get("character_id", current.character_id)
        linked = character if active and isinstance(character, str) else None
        refuse_taken(session, slug=None, character_id=linked, model_id=model_id)
        with unique_guard(session, slug=None, character_id=linked, model_id=model_id):
            session.connection().execute(
                update(models).where(models.c.id == model_id).values(values)
            )
        after = get_model(session, model_id)
        audit.record(
            session,
            "model.update",
            "model",
            model_id,
            before={k: getattr(current, k) for k in values},
            after={k: getattr(after, k) for k in values},
        )
        return after
    return current


def _values(changes: ModelChanges) -> dict[str, object]:
    """The column values ``changes`` sets, checked. Raises :class:`InvalidInput`."""
    values: dict[str, object] = {}
    if changes.name is not None:
        if not changes.name.strip():
            raise InvalidInput("name must not be empty")
        values["name"] = changes.name.strip()[:200]
    if changes.category is not None:
        values["category"] = changes.category[:64]
    if changes.tier is not None:
        values["tier"] = Tier(changes.tier).value
    if changes.demand is not None:
        if changes.demand not in DEMANDS:
            raise InvalidInput(f"demand must be high, medium or low, got {changes.demand!r}")
        values["demand"] = changes.demand
    if changes.is_premium is not None:
        values["is_premium"] = changes.is_premium
    if changes.access_price_ucr is not None:
        if changes.access_price_ucr < 0:
            raise InvalidInput("access_price_ucr must be ≥ 0")
        values["access_price_ucr"] = changes.access_price_ucr
    if changes.creator_id is not None:
        values["creator_id"] = changes.creator_id
    if changes.is_active is not None:
        values["is_active"] = changes.is_active
    if changes.unlink_character:
        if changes.character_id is not None:
            raise InvalidInput("give character_id or unlink it, not both")
        values["character_id"] = None
    elif changes.character_id is not None:
        values["character_id"] = check_character_id(changes.character_id)
    return values


def deactivate_model(session: Session, model_id: int) -> ModelInfo:
    """Take a model out of the catalog: it can no longer be charged for; history stays.
    Raises :class:`~modelbank.catalog.errors.ModelNotFound`."""
    return update_model(session, model_id, ModelChanges(is_active=False))


def list_models(
    session: Session,
    *,
    category: str | None = None,
    mode: Mode | None = None,
    premium: bool | None = None,
    search: str | None = None,
    active_only: bool = True,
    after_id: int = 0,
    limit: int | None = None,
) -> list[ModelInfo]:
    """Models in id order after ``after_id`` (cursor), filtered; at most ``limit``."""
    query = select(models.c.id).where(models.c.id > after_id).order_by(models.c.id)
    if active_only:
        query = query.where(models.c.is_active.is_(True))
    if category is not None:
        query = query.where(models.c.category == category)
    if mode is not None:
        query = query.where(models.c.mode == Mode(mode).value)
    if premium is not None:
        query = query.where(models.c.is_premium.is_(premium))
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(
            models.c.slug.like(pattern) | models.c.name.ilike(pattern)  # slugs are lowercase
        )
    if limit is not None:
        query = query.limit(limit)
    ids = [int(i) for i in session.connection().execute(query).scalars()]
    found = resolve_models(session, ids, active_only=False)
    return [found[i] for i in ids]


def set_monetised(session: Session, model_id: int, enabled: bool) -> ModelInfo:
    """Switch a model's monetisation (DESIGN §7): when off, its usage is still charged but
    earns its beneficiaries nothing (the usage row's ``earnings_note`` is
    ``monetisation_off``). Return the model as it now is. Raises
    :class:`~modelbank.catalog.errors.ModelNotFound`."""
    before = get_model(session, model_id)
    session.connection().execute(
        update(models).where(models.c.id == model_id).values(monetised=bool(enabled))
    )
    after = get_model(session, model_id)
    audit.record(
        session,
        "model.monetisation",
        "model",
        model_id,
        before={"monetised": before.monetised},
        after={"monetised": after.monetised},
    )
    return after
