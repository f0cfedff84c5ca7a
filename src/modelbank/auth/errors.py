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


class KeyLimitReached(DomainError):
    """A charge or hold made with a limited API key would pass the key's spend limit for
    its period: nothing was written (HTTP 402)."""

    code = "key_limit_reached"
