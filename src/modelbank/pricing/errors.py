"""Pricing errors."""

from __future__ import annotations

from modelbank.errors import InvalidInput, NotFound


class NoPrice(NotFound):
    """The model has no price version effective at that time."""

    code = "no_price"


class InvalidPrice(InvalidInput):
    """A negative or non-finite rate, or neither a cost nor an explicit price."""

    code = "invalid_price"
