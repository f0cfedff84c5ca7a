"""Errors of subscriptions, referrals and promo codes (stable codes, no HTTP; the API maps
the ``*_state`` / ``*_unavailable`` conflicts to 409 and the not-founds to 404)."""

from __future__ import annotations

from modelbank.errors import DomainError, NotFound


class PlanNotFound(NotFound):
    """No subscription plan with that id."""

    code = "plan_not_found"


class SubscriptionNotFound(NotFound):
    """No subscription with that id (or not visible to the caller)."""

    code = "subscription_not_found"


class SubscriptionState(DomainError):
    """The subscription is not in a state that allows this (a period confirmed on a
    cancelled subscription, a second live subscription …). Context: ``status``."""

    code = "subscription_state_conflict"


class PromoCodeNotFound(NotFound):
    """No promo code by that name (or it was switched off)."""

    code = "promo_code_not_found"


class PromoCodeUnavailable(DomainError):
    """The promo code cannot be redeemed now: it expired, its use limit is reached, or this
    user already redeemed a once-per-user code (context ``reason``: ``expired``,
    ``exhausted``)."""

    code = "promo_code_unavailable"


class ReferralNotAllowed(DomainError):
    """A referral that earns nothing and is refused: the user's own code, a user already
    referred, or one who already bought credits (context ``reason``)."""

    code = "referral_not_allowed"


class ReferralCodeNotFound(NotFound):
    """No user has that referral code."""

    code = "referral_code_not_found"
