"""Authentication and authorisation errors."""

from __future__ import annotations

from modelbank.errors import DomainError, NotFound


class Unauthenticated(DomainError):
    """No API key, or one that is unknown or revoked."""

    code = "unauthenticated"


class Forbidden(DomainError):
    """The key's role may not do this (admin-only operations)."""

    code = "forbidden"


class KeyNotFound(NotFound):
    """No such API key."""

    code = "api_key_not_found"
