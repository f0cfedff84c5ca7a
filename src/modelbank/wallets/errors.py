"""Wallet errors (stable codes, no HTTP).

Payment-provider refusals live here too: the API maps ``payment_provider_error`` to a bad
gateway, ``payment_provider_not_configured`` to 422 (a provider this installation does not
offer) and
``webhook_signature_invalid`` to a 400 (never a 2xx, so a forged delivery is never acknowledged).
"""

from __future__ import annotations

from modelbank.errors import DomainError, NotFound


class PaymentProviderError(DomainError):
    """The payment provider refused or failed a request (network error, rejected API key,
    invalid parameters, unusable response). The message names the failure but never carries a
    secret. Context: ``provider`` and, when known, ``http_status``, ``provider_code``,
    ``request_id``."""

    code = "payment_provider_error"


class PaymentProviderNotConfigured(DomainError):
    """The provider is not set up on this installation (no Stripe secret key, or no webhook
    signing secret to verify deliveries with). Context: ``provider``, ``setting``."""

    code = "payment_provider_not_configured"


class WebhookSignatureInvalid(DomainError):
    """An incoming provider webhook failed verification: missing or malformed signature header,
    a signature that does not match the payload, or a timestamp outside the tolerance window.
    Context: ``provider``."""

    code = "webhook_signature_invalid"


class PackageNotFound(NotFound):
    """No credit package with that id."""

    code = "package_not_found"


class PurchaseNotFound(NotFound):
    """No purchase with that id (or not visible to the caller)."""

    code = "purchase_not_found"


class PurchaseState(DomainError):
    """The purchase is not in a state that allows this (confirming an expired purchase,
    refunding one never paid …). Context: ``status``."""

    code = "purchase_state_conflict"


class HoldNotFound(NotFound):
    """No wallet hold with that id (or not visible to the caller)."""

    code = "hold_not_found"


class RefundExceedsCharge(DomainError):
    """More refunded than is left of the charge. Context: ``refundable_ucr``."""

    code = "refund_exceeds_charge"


class PaymentMethodRequired(DomainError):
    """Auto top-up through Stripe needs a saved card: save one first (a Checkout Session in
    setup mode, ``POST /users/{user_id}/auto-topup/payment-method``). Context: ``user_id``."""

    code = "payment_method_required"
