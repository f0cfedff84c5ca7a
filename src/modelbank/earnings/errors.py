"""Earnings errors."""

from __future__ import annotations

from modelbank.errors import DomainError, InvalidInput, NotFound


class InvalidSplit(InvalidInput):
    """Beneficiary shares that do not sum to 10,000 bps, or a duplicate beneficiary."""

    code = "invalid_split"


class InvalidRule(InvalidInput):
    """An earnings rule with a negative amount, a share outside 0…10,000 bps, or bad tiers."""

    code = "invalid_earnings_rule"


class PayoutNotFound(NotFound):
    """No payout with that id (or not visible to the caller). Context: ``payout_id``."""

    code = "payout_not_found"


class PayoutBelowMinimum(InvalidInput):
    """A payout request under the platform's minimum. Context: ``amount_ucr``,
    ``minimum_ucr``, ``available_ucr``."""

    code = "payout_below_minimum"


class PayoutExceedsAvailable(InvalidInput):
    """A payout request over the withdrawable earnings (posted − held − owed back from
    refunds). Context: ``amount_ucr``, ``available_ucr``, ``owed_ucr``."""

    code = "payout_exceeds_available"


class PayoutStateConflict(DomainError):
    """The payout is not in a state that allows this (completing, failing or cancelling one
    that is no longer pending). Context: ``payout_id``, ``status``."""

    code = "payout_state_conflict"


class PayoutBlockedByDebt(DomainError):
    """Completing this payout would pay out credits a refund made the creator owe back: a
    usage refund after the request left a debt the rest of their earnings do not cover.
    Context: ``payout_id``, ``owed_ucr``, ``available_ucr``, ``shortfall_ucr``."""

    code = "payout_blocked_by_debt"


class PayoutAdapterUnavailable(InvalidInput):
    """The payout adapter is a documented interface without an implementation here (Stripe
    Connect), or an unknown name. Context: ``adapter``."""

    code = "payout_adapter_unavailable"


class ListingNotFound(NotFound):
    """No stake listing with that id on that model (or not visible to the caller)."""

    code = "stake_listing_not_found"


class ListingState(DomainError):
    """The listing is no longer open (sold or cancelled): it cannot be bought or cancelled."""

    code = "stake_listing_state"


class StakeUnavailable(InvalidInput):
    """The seller does not hold the stake offered: less than ``share_bps`` not already
    listed in their open listings (or, at purchase, no longer holds the listed share)."""

    code = "stake_unavailable"


class OwnListing(InvalidInput):
    """A seller tried to buy their own listing."""

    code = "own_stake_listing"
