"""Catalog errors."""

from __future__ import annotations

from modelbank.errors import DomainError, InvalidInput, NotFound


class ModelNotFound(NotFound):
    """No model with that id or slug (or it is inactive where an active one is needed)."""

    code = "model_not_found"


class ModelExists(InvalidInput):
    """A model with that slug already exists."""

    code = "model_exists"


class AccessRequired(DomainError):
    """A premium model was used without bought access (and not by its creator)."""

    code = "model_access_required"


class NotPremium(InvalidInput):
    """Access was bought for a model that is free to use."""

    code = "model_not_premium"


class CharacterNotFound(NotFound):
    """No active model is linked to that character id."""

    code = "character_not_found"


class CharacterInUse(InvalidInput):
    """Another active model is already linked to that character id (one model per
    character among active models)."""

    code = "character_in_use"
