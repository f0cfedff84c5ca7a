"""Earnings errors."""

from __future__ import annotations

from modelbank.errors import InvalidInput


class InvalidSplit(InvalidInput):
    """Beneficiary shares that do not sum to 10,000 bps, or a duplicate beneficiary."""

    code = "invalid_split"


class InvalidRule(InvalidInput):
    """An earnings rule with a negative amount, a share outside 0…10,000 bps, or bad tiers."""

    code = "invalid_earnings_rule"
