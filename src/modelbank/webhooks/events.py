"""Event types and subscription patterns (pure; no database).

A subscription pattern is a known event type (``wallet.low_balance``), a family wildcard
(``payout.*``: every type that starts with ``payout.``) or ``*`` (everything).
"""

from __future__ import annotations

from collections.abc import Iterable

from modelbank.errors import InvalidInput

EVENT_TYPES: tuple[str, ...] = (
    "wallet.low_balance",
    "wallet.auto_topup_failed",
    "purchase.completed",
    "purchase.refunded",
    "purchase.amount_mismatch",
    "usage.refunded",
    "hold.expired",
    "payout.requested",
    "payout.completed",
    "payout.failed",
    "payout.cancelled",
    "marketplace.order.filled",
    "marketplace.allocation.exhausted",
    "marketplace.escrow.returned",
    "subscription.period_paid",
    "subscription.cancelled",
    "subscription.renewal_failed",
    "referral.rewarded",
)
"""Every event type modelbank emits (``<family>.<what happened>``)."""

FAMILIES: frozenset[str] = frozenset(t.partition(".")[0] for t in EVENT_TYPES)
"""The ``<family>`` parts, for ``<family>.*`` patterns."""

MAX_PATTERNS = 50
"""Patterns per endpoint: there are few event types; more is a mistake."""


def matches(pattern: str, event_type: str) -> bool:
    """True when ``pattern`` (a type, ``family.*`` or ``*``) covers ``event_type``."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def subscribed(patterns: Iterable[str], event_type: str) -> bool:
    """True when any of ``patterns`` covers ``event_type``."""
    return any(matches(p, event_type) for p in patterns)


def check_event_type(event_type: str) -> str:
    """``event_type`` if it is one of :data:`EVENT_TYPES`; else :class:`InvalidInput`."""
    if event_type not in EVENT_TYPES:
        raise InvalidInput(
            f"unknown event type {event_type!r}: expected one of {', '.join(EVENT_TYPES)}",
            event_type=event_type,
        )
    return event_type


def check_patterns(patterns: Iterable[str]) -> list[str]:
    """The patterns, de-duplicated in their order. Raises :class:`InvalidInput` when there
    are none, more than :data:`MAX_PATTERNS`, or one that is neither a known type,
    ``<family>.*`` of a known family, nor ``*``."""
    found = list(dict.fromkeys(patterns))
    if not found:
        raise InvalidInput("events: subscribe to at least one event type (or '*')")
    if len(found) > MAX_PATTERNS:
        raise InvalidInput(f"events: at most {MAX_PATTERNS} patterns", count=len(found))
    for pattern in found:
        family, dot, rest = pattern.partition(".")
        ok = (
            pattern == "*"
            or pattern in EVENT_TYPES
            or (dot == "." and rest == "*" and family in FAMILIES)
        )
        if not ok:
            raise InvalidInput(
                f"events: unknown event type or pattern {pattern!r}; use one of"
                f" {', '.join(EVENT_TYPES)}, '<family>.*' or '*'",
                pattern=pattern,
            )
    return found
