"""Metering errors."""

from __future__ import annotations

from modelbank.errors import InvalidInput, NotFound


class InvalidUsage(InvalidInput):
    """A usage event with negative or inconsistent quantities, or an oversized field."""

    code = "invalid_usage"


class BatchTooLarge(InvalidInput):
    """More events in one batch than :data:`~modelbank.metering.service.MAX_BATCH_EVENTS`."""

    code = "batch_too_large"


class UsageNotFound(NotFound):
    """No usage event with that id (or not visible to the caller)."""

    code = "usage_not_found"
