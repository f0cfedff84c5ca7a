"""Catalog errors."""

from __future__ import annotations

from modelbank.errors import InvalidInput, NotFound


class ModelNotFound(NotFound):
    """No model with that id or slug (or it is inactive where an active one is needed)."""

    code = "model_not_found"


class ModelExists(InvalidInput):
    """A model with that slug already exists."""

    code = "model_exists"
