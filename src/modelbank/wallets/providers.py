"""Payment provider adapters: start a checkout, read the provider's signed webhooks (DESIGN §5).

The wallet service calls these; they hold no database code and grant nothing. They turn a
purchase into a place to send the buyer (:meth:`PaymentProvider.create_checkout`) and turn a
provider's webhook delivery into a verified, provider-neutral :class:`PaymentEvent` that the
service applies exactly once (deduplicated by ``event_id``, ordered by ``created``).

Providers:

- ``manual``: for operators without Stripe and for tests. No checkout page; an admin confirms
  the payment through the wallet service.
- ``stripe``: a Stripe Checkout Session made with the official ``stripe`` SDK; completion,
  expiry and refunds arrive at ``POST /api/v1/webhooks/stripe`` and are verified with the
  SDK's signature check against the endpoint's signing secret.

Money here is in **cents** (the provider edge, DESIGN §2); credits in µcr.

This module is the entry point (the factories); the adapters live beside it:
:mod:`~modelbank.wallets.payment_types` (the provider-neutral values),
:mod:`~modelbank.wallets.manual_provider`, :mod:`~modelbank.wallets.stripe_checkout` and
:mod:`~modelbank.wallets.stripe_events` (webhook verification and mapping).
"""

from __future__ import annotations

import stripe

from modelbank.config import Settings
from modelbank.errors import InvalidInput
from modelbank.wallets.errors import PaymentProviderNotConfigured
from modelbank.wallets.manual_provider import ManualProvider
from modelbank.wallets.payment_types import (
    Checkout,
    CheckoutRequest,
    PaymentEvent,
    PaymentEventKind,
    PaymentProvider,
)
from modelbank.wallets.stripe_checkout import STRIPE_TIMEOUT_S, StripeProvider
from modelbank.wallets.stripe_events import STRIPE_WEBHOOK_TOLERANCE_S

PROVIDER_NAMES = ("manual", "stripe")
"""Names :func:`provider_for` accepts."""


def stripe_from_settings(
    settings: Settings, *, http_client: stripe.HTTPClient | None = None
) -> StripeProvider:
    """A :class:`StripeProvider` from ``settings.stripe_secret_key`` and
    ``settings.stripe_webhook_secret`` (the latter may be unset: webhooks are then refused).

    Raises :class:`PaymentProviderNotConfigured` when no secret key is set.
    """
    if settings.stripe_secret_key is None:
        raise PaymentProviderNotConfigured(
            "Stripe is not configured: set MODELBANK_STRIPE_SECRET_KEY",
            provider="stripe",
            setting="stripe_secret_key",
        )
    webhook_secret = settings.stripe_webhook_secret
    return StripeProvider(
        settings.stripe_secret_key.get_secret_value(),
        webhook_secret.get_secret_value() if webhook_secret is not None else None,
        http_client=http_client,
    )


def provider_for(
    name: str, settings: Settings, *, http_client: stripe.HTTPClient | None = None
) -> PaymentProvider:
    """The adapter called ``name``: ``"manual"`` (always available) or ``"stripe"``.

    ``http_client`` is passed to the Stripe adapter (tests). Raises
    :class:`PaymentProviderNotConfigured` for ``"stripe"`` without a secret key and
    :class:`~modelbank.errors.InvalidInput` for an unknown name.
    """
    if name == "manual":
        return ManualProvider()
    if name == "stripe":
        return stripe_from_settings(settings, http_client=http_client)
    raise InvalidInput(
        f"unknown payment provider {name!r} (known: {', '.join(PROVIDER_NAMES)})",
        provider=name,
        known=list(PROVIDER_NAMES),
    )


__all__ = [
    "PROVIDER_NAMES",
    "STRIPE_TIMEOUT_S",
    "STRIPE_WEBHOOK_TOLERANCE_S",
    "Checkout",
    "CheckoutRequest",
    "ManualProvider",
    "PaymentEvent",
    "PaymentEventKind",
    "PaymentProvider",
    "StripeProvider",
    "provider_for",
    "stripe_from_settings",
]
