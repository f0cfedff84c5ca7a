"""User errors."""

from __future__ import annotations

from modelbank.errors import InvalidInput, NotFound


class UserNotFound(NotFound):
    """No user with that id or external id."""

    code = "user_not_found"


class UserExists(InvalidInput):
    """A user with that external id already exists."""

    code = "user_exists"
