"""Subscription payment adapters (issue 13): Stripe Billing and the ``manual`` provider.

Like :mod:`modelbank.wallets.providers` for one-off purchases, these hold no database code and
grant nothing: they start a subscription checkout, cancel at the provider, and turn Stripe's
signed webhooks about subscriptions into a provider-neutral :class:`SubscriptionEvent` that
:mod:`modelbank.wallets.subscriptions` applies exactly once.

- ``manual``: no checkout; an admin confirms each period (or the jobs renew manual
  subscriptions when ``MODELBANK_MANUAL_SUBSCRIPTIONS_AUTO_RENEW`` is on).
- ``stripe``: a Checkout Session in ``subscription`` mode (inline ``price_data`` with
  ``recurring.interval``: no Stripe Price objects to keep in sync); the subscription carries
  ``metadata.subscription_id`` so its invoices name it even when ``invoice.paid`` arrives
  before ``checkout.session.completed``.

Money here is in cents (the provider edge, DESIGN §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import stripe

from modelbank.config import Settings
from modelbank.errors import InvalidInput
from modelbank.wallets.errors import (
    PaymentProviderError,
    PaymentProviderNotConfigured,
    WebhookSignatureInvalid,
)
from modelbank.wallets.providers import STRIPE_TIMEOUT_S, STRIPE_WEBHOOK_TOLERANCE_S


@dataclass(frozen=True, slots=True)
class SubscriptionCheckoutRequest:
    """What to collect: ``price_cents`` every ``interval`` for plan ``plan_name``."""

    subscription_id: int
    user_id: int
    plan_id: int
    plan_name: str
    price_cents: int
    currency: str
    interval: str
    success_url: str
    cancel_url: str


@dataclass(frozen=True, slots=True)
class SubscriptionCheckout:
    """A started subscription checkout: the Checkout Session id and URL (None for manual)."""

    provider: str
    checkout_id: str | None
    checkout_url: str | None


class SubscriptionEventKind(StrEnum):
    """What a verified provider event means for a subscription."""

    CHECKOUT_COMPLETED = "checkout_done"
    """The buyer finished checkout: the provider's subscription id is known."""
    CHECKOUT_EXPIRED = "checkout_expired"
    """The checkout ended unpaid: a pending subscription is cancelled."""
    PERIOD_PAID = "period_paid"
    """An invoice was paid: grant that period's credits (once per invoice)."""
    PAYMENT_FAILED = "payment_failed"
    """A renewal payment failed: past due (and ``subscription.renewal_failed``)."""
    DELETED = "deleted"
    """The provider ended the subscription: cancelled."""
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    """A verified provider event about a subscription. ``subscription_id``: ours, from the
    metadata (None when absent); ``external_id``: the provider's (``sub_…``);
    ``invoice_id``: ``in_…`` (PERIOD_PAID, PAYMENT_FAILED); ``amount_cents``: paid;
    ``period_start``/``period_end``: the period the invoice pays for."""

    provider: str
    event_id: str
    kind: SubscriptionEventKind
    subscription_id: int | None = None
    external_id: str | None = None
    checkout_id: str | None = None
    invoice_id: str | None = None
    amount_cents: int | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None


class SubscriptionProvider(Protocol):
    """Starts and cancels subscriptions at a payment provider."""

    name: str

    def create_checkout(self, request: SubscriptionCheckoutRequest) -> SubscriptionCheckout:
        """Start collecting the plan's price every period; never grants credits. Raises
        :class:`PaymentProviderError`."""
        ...

    def cancel(self, external_id: str, *, subscription_id: int) -> None:
        """Stop renewing at the end of the current period. Raises
        :class:`PaymentProviderError`."""
        ...


class ManualBilling:
    """No payment page and nothing to cancel at a provider: the operator bills outside."""

    name: str = "manual"

    def create_checkout(self, request: SubscriptionCheckoutRequest) -> SubscriptionCheckout:
        """``SubscriptionCheckout("manual", None, None)``; never fails."""
        return SubscriptionCheckout(provider=self.name, checkout_id=None, checkout_url=None)

    def cancel(self, external_id: str, *, subscription_id: int) -> None:
        """Nothing to do."""


class StripeBilling:
    """Stripe Billing through the official SDK. ``http_client``: a ``stripe.HTTPClient``
    (tests inject a stub). Raises :class:`PaymentProviderNotConfigured` for an empty key."""

    name: str = "stripe"

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str | None,
        *,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        if not secret_key.strip():
            raise PaymentProviderNotConfigured(
                "Stripe is not configured: set MODELBANK_STRIPE_SECRET_KEY",
                provider="stripe",
                setting="stripe_secret_key",
            )
        self._secret_key = secret_key
        self._webhook_secret = webhook_secret or None
        self._http_client = http_client
        self._client: stripe.StripeClient | None = None

    def __repr__(self) -> str:
        return "StripeBilling(secret_key=<redacted>)"

    def _stripe(self) -> stripe.StripeClient:
        if self._client is None:
            self._client = stripe.StripeClient(
                self._secret_key,
                http_client=self._http_client or stripe.RequestsClient(timeout=STRIPE_TIMEOUT_S),
                max_network_retries=2,
            )
        return self._client

    def create_checkout(self, request: SubscriptionCheckoutRequest) -> SubscriptionCheckout:
        """A Checkout Session in ``subscription`` mode: one line of ``price_cents`` per
        ``interval``; session and subscription carry ``metadata.subscription_id``; idempotency
        key ``modelbank-subscription-<id>``. Raises :class:`PaymentProviderError`."""
        metadata = {
            "subscription_id": str(request.subscription_id),
            "user_id": str(request.user_id),
            "plan_id": str(request.plan_id),
        }
        try:
            session = self._stripe().v1.checkout.sessions.create(
                params={
                    "mode": "subscription",
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": request.currency,
                                "unit_amount": request.price_cents,
                                "recurring": {"interval": request.interval},
                                "product_data": {"name": request.plan_name},
                            },
                        }
                    ],
                    "client_reference_id": f"subscription-{request.subscription_id}",
                    "metadata": metadata,
                    "subscription_data": {"metadata": dict(metadata)},
                    "success_url": request.success_url,
                    "cancel_url": request.cancel_url,
                },
                options={"idempotency_key": f"modelbank-subscription-{request.subscription_id}"},
            )
        except stripe.StripeError as exc:
            raise _error(exc, "start the subscription checkout", request.subscription_id) from None
        session_id = getattr(session, "id", None)
        url = getattr(session, "url", None)
        if not isinstance(session_id, str) or not isinstance(url, str):
            raise PaymentProviderError(
                "Stripe answered without a checkout session id or URL",
                provider="stripe",
                subscription_id=request.subscription_id,
            )
        return SubscriptionCheckout(provider=self.name, checkout_id=session_id, checkout_url=url)

    def cancel(self, external_id: str, *, subscription_id: int) -> None:
        """``cancel_at_period_end`` on the Stripe subscription (the period paid for runs out;
        ``customer.subscription.deleted`` follows). Raises :class:`PaymentProviderError`."""
        try:
            self._stripe().v1.subscriptions.update(
                external_id,
                params={"cancel_at_period_end": True},
                options={"idempotency_key": f"modelbank-subscription-cancel-{subscription_id}"},
            )
        except stripe.StripeError as exc:
            raise _error(exc, "cancel the subscription", subscription_id) from None

    def parse_webhook(
        self, payload: bytes, signature_header: str | None
    ) -> SubscriptionEvent | None:
        """Verify a delivery and map it when it concerns a subscription: ``invoice.paid`` →
        PERIOD_PAID, ``invoice.payment_failed`` → PAYMENT_FAILED,
        ``customer.subscription.deleted`` → DELETED, ``checkout.session.completed`` /
        ``.expired`` of a ``subscription``-mode session → CHECKOUT_COMPLETED / EXPIRED.
        Returns None for every other event (one-off purchases' events: the caller hands them
        to :mod:`modelbank.wallets.providers`). Raises :class:`PaymentProviderNotConfigured`,
        :class:`WebhookSignatureInvalid`, :class:`InvalidInput` (signed but not an event)."""
        if not self._webhook_secret:
            raise PaymentProviderNotConfigured(
                "Stripe webhooks are not configured: set MODELBANK_STRIPE_WEBHOOK_SECRET",
                provider="stripe",
                setting="stripe_webhook_secret",
            )
        try:
            event = stripe.Webhook.construct_event(
                payload,
                signature_header,
                self._webhook_secret,
                tolerance=STRIPE_WEBHOOK_TOLERANCE_S,
            )
        except stripe.SignatureVerificationError:
            raise WebhookSignatureInvalid(
                "Stripe webhook signature is invalid", provider="stripe"
            ) from None
        except UnicodeDecodeError:
            raise WebhookSignatureInvalid(
                "Stripe webhook body is not UTF-8", provider="stripe"
            ) from None
        except ValueError as exc:
            raise InvalidInput(f"signed Stripe webhook body is not an event: {exc}") from None
        return map_event(event.to_dict())


def map_event(data: Mapping[str, Any]) -> SubscriptionEvent | None:
    """A Stripe event (dict) as a :class:`SubscriptionEvent`, or None when it is not about a
    subscription. Pure: tested without signatures."""
    event_type, event_id = data.get("type"), data.get("id")
    if not isinstance(event_type, str) or not isinstance(event_id, str):
        raise InvalidInput("Stripe event without an id or type", provider="stripe")
    inner = data.get("data")
    obj: Mapping[str, Any] = {}
    if isinstance(inner, Mapping) and isinstance(inner.get("object"), Mapping):
        obj = inner["object"]
    if event_type.startswith("checkout.session."):
        if obj.get("mode") != "subscription":
            return None
        kind = {
            "checkout.session.completed": SubscriptionEventKind.CHECKOUT_COMPLETED,
            "checkout.session.expired": SubscriptionEventKind.CHECKOUT_EXPIRED,
        }.get(event_type, SubscriptionEventKind.IGNORED)
        return SubscriptionEvent(
            "stripe",
            event_id,
            kind,
            subscription_id=_our_id(obj.get("metadata")),
            external_id=_ref(obj.get("subscription")),
            checkout_id=_ref(obj.get("id")),
        )
    if event_type in ("invoice.paid", "invoice.payment_failed"):
        external, metadata = _invoice_subscription(obj)
        if external is None and metadata is None:
            return None  # an invoice of no subscription
        start, end = _invoice_period(obj)
        return SubscriptionEvent(
            "stripe",
            event_id,
            SubscriptionEventKind.PERIOD_PAID
            if event_type == "invoice.paid"
            else SubscriptionEventKind.PAYMENT_FAILED,
            subscription_id=_our_id(metadata),
            external_id=external,
            invoice_id=_ref(obj.get("id")),
            amount_cents=_int(obj.get("amount_paid")),
            period_start=start,
            period_end=end,
        )
    if event_type == "customer.subscription.deleted":
        return SubscriptionEvent(
            "stripe",
            event_id,
            SubscriptionEventKind.DELETED,
            subscription_id=_our_id(obj.get("metadata")),
            external_id=_ref(obj.get("id")),
        )
    if event_type.startswith("customer.subscription."):
        return SubscriptionEvent("stripe", event_id, SubscriptionEventKind.IGNORED)
    return None


def _invoice_subscription(obj: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any] | None]:
    """The invoice's subscription id and metadata, in the older (``subscription``,
    ``subscription_details``) or newer (``parent.subscription_details``) API shapes."""
    details = obj.get("subscription_details")
    external = _ref(obj.get("subscription"))
    parent = obj.get("parent")
    if isinstance(parent, Mapping) and isinstance(parent.get("subscription_details"), Mapping):
        details = parent["subscription_details"]
        external = external or _ref(details.get("subscription"))
    metadata = details.get("metadata") if isinstance(details, Mapping) else None
    return external, metadata if isinstance(metadata, Mapping) else None


def _invoice_period(obj: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """The period the invoice pays for: its first line's ``period`` (an invoice's own
    ``period_start``/``period_end`` describe the *previous* period for renewals)."""
    lines = obj.get("lines")
    data = lines.get("data") if isinstance(lines, Mapping) else None
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        period = data[0].get("period")
        if isinstance(period, Mapping):
            start, end = _int(period.get("start")), _int(period.get("end"))
            if start is not None and end is not None and end > start:
                return _at(start), _at(end)
    return None, None


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ref(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _our_id(metadata: Any) -> int | None:
    if isinstance(metadata, Mapping):
        value = metadata.get("subscription_id")
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)
    return None


def _error(exc: stripe.StripeError, what: str, subscription_id: int) -> PaymentProviderError:
    return PaymentProviderError(
        f"Stripe could not {what} ({type(exc).__name__})",
        provider="stripe",
        http_status=exc.http_status,
        provider_code=exc.code,
        subscription_id=subscription_id,
    )


def billing_for(
    name: str, settings: Settings, *, http_client: stripe.HTTPClient | None = None
) -> SubscriptionProvider:
    """The adapter called ``name`` (``manual`` or ``stripe``). Raises
    :class:`PaymentProviderNotConfigured` (Stripe without a key), :class:`InvalidInput`."""
    if name == "manual":
        return ManualBilling()
    if name == "stripe":
        return stripe_billing(settings, http_client=http_client)
    raise InvalidInput(f"unknown payment provider {name!r} (known: manual, stripe)")


def stripe_billing(
    settings: Settings, *, http_client: stripe.HTTPClient | None = None
) -> StripeBilling:
    """A :class:`StripeBilling` from the settings. Raises
    :class:`PaymentProviderNotConfigured` without a secret key."""
    if settings.stripe_secret_key is None:
        raise PaymentProviderNotConfigured(
            "Stripe is not configured: set MODELBANK_STRIPE_SECRET_KEY",
            provider="stripe",
            setting="stripe_secret_key",
        )
    webhook = settings.stripe_webhook_secret
    return StripeBilling(
        settings.stripe_secret_key.get_secret_value(),
        None if webhook is None else webhook.get_secret_value(),
        http_client=http_client,
    )
