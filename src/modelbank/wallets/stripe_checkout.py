"""The ``stripe`` payment provider (DESIGN §5): Stripe Checkout Sessions, saved cards and
off-session charges made with the official ``stripe`` SDK; webhooks are verified and mapped by
:mod:`modelbank.wallets.stripe_events`. Holds no database code and grants nothing.

Money here is in **cents** (the provider edge, DESIGN §2); credits in µcr.
"""

from __future__ import annotations

from typing import Any

import stripe

from modelbank.errors import InvalidInput
from modelbank.wallets import stripe_events
from modelbank.wallets.errors import PaymentProviderError, PaymentProviderNotConfigured
from modelbank.wallets.payment_types import Checkout, CheckoutRequest, PaymentEvent
from modelbank.wallets.stripe_events import STRIPE_WEBHOOK_TOLERANCE_S, scrub

STRIPE_TIMEOUT_S = 30.0
"""Seconds the default Stripe HTTP client waits for an API response."""


class StripeProvider:
    """Stripe Checkout through the official SDK (``stripe.StripeClient``).

    ``secret_key``: the Stripe secret API key (never logged, never put in an error);
    ``webhook_secret``: the endpoint's signing secret (``whsec_…``), needed only by
    :meth:`parse_webhook`; ``http_client``: a ``stripe.HTTPClient`` to send API requests
    through (tests inject a stub; default: the SDK's ``RequestsClient`` with
    ``timeout_s``); ``webhook_tolerance_s``: oldest signature timestamp accepted (seconds,
    > 0); ``max_network_retries``: SDK retries of connection errors, 409s and 5xx (safe: every
    create carries an idempotency key).

    Raises :class:`PaymentProviderNotConfigured` for an empty secret key and
    :class:`~modelbank.errors.InvalidInput` for a non-positive tolerance.
    """

    name: str = "stripe"

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str | None,
        *,
        http_client: stripe.HTTPClient | None = None,
        webhook_tolerance_s: int = STRIPE_WEBHOOK_TOLERANCE_S,
        timeout_s: float = STRIPE_TIMEOUT_S,
        max_network_retries: int = 2,
    ) -> None:
        if not secret_key.strip():
            raise PaymentProviderNotConfigured(
                "Stripe is not configured: set MODELBANK_STRIPE_SECRET_KEY",
                provider="stripe",
                setting="stripe_secret_key",
            )
        if webhook_tolerance_s <= 0:
            # The SDK treats a tolerance of 0 as "accept any age": never allow that.
            raise InvalidInput(
                "webhook_tolerance_s must be > 0", webhook_tolerance_s=webhook_tolerance_s
            )
        self._secret_key = secret_key
        self._webhook_secret = webhook_secret or None
        self._http_client = http_client
        self._tolerance_s = webhook_tolerance_s
        self._timeout_s = timeout_s
        self._max_network_retries = max_network_retries
        self._client: stripe.StripeClient | None = None

    def __repr__(self) -> str:
        configured = "set" if self._webhook_secret else "unset"
        return f"StripeProvider(secret_key=<redacted>, webhook_secret=<{configured}>)"

    def _stripe(self) -> stripe.StripeClient:
        # Built on first use: verifying webhooks needs no API client (and no TLS setup).
        if self._client is None:
            http_client = self._http_client or stripe.RequestsClient(timeout=self._timeout_s)
            self._client = stripe.StripeClient(
                self._secret_key,
                http_client=http_client,
                max_network_retries=self._max_network_retries,
            )
        return self._client

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Create a Stripe Checkout Session (``mode="payment"``, one line item of
        ``price_cents`` in ``currency``) and return its id and URL.

        The session and its PaymentIntent carry ``metadata`` ``purchase_id``, ``user_id``,
        ``credits_ucr`` (so ``charge.refunded`` names the purchase); ``client_reference_id``
        is the purchase id. The idempotency key ``modelbank-purchase-<purchase_id>`` makes a
        retried create return the same session (Stripe keeps keys for 24 h).

        Raises :class:`~modelbank.errors.InvalidInput` for a zero price (Stripe cannot charge
        nothing) and :class:`PaymentProviderError` when Stripe fails, refuses the request or
        answers without a session id or URL.
        """
        if request.price_cents <= 0:
            raise InvalidInput(
                "a Stripe checkout needs a price > 0 cents", price_cents=request.price_cents
            )
        metadata = {
            "purchase_id": str(request.purchase_id),
            "user_id": str(request.user_id),
            "credits_ucr": str(request.credits_ucr),
        }
        try:
            session = self._stripe().v1.checkout.sessions.create(
                params={
                    "mode": "payment",
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": request.currency,
                                "unit_amount": request.price_cents,
                                "product_data": {"name": request.package_name},
                            },
                        }
                    ],
                    "client_reference_id": str(request.purchase_id),
                    "metadata": metadata,
                    "payment_intent_data": {"metadata": dict(metadata)},
                    "success_url": request.success_url,
                    "cancel_url": request.cancel_url,
                },
                options={"idempotency_key": f"modelbank-purchase-{request.purchase_id}"},
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc, purchase_id=request.purchase_id) from None
        session_id = getattr(session, "id", None)
        url = getattr(session, "url", None)
        if not isinstance(session_id, str) or not session_id or not isinstance(url, str):
            raise PaymentProviderError(
                "Stripe answered without a checkout session id or URL",
                provider="stripe",
                purchase_id=request.purchase_id,
            )
        return Checkout(provider=self.name, external_id=session_id, checkout_url=url)

    def create_setup_session(
        self,
        user_id: int,
        customer_id: str | None,
        *,
        currency: str,
        success_url: str,
        cancel_url: str,
    ) -> tuple[str, str, str]:
        """Start saving a card for off-session auto top-ups: a Stripe Customer for the user
        (made once, idempotency key ``modelbank-customer-<user_id>``, unless ``customer_id``
        is given) and a Checkout Session in ``setup`` mode for payments in ``currency``
        (the package's; Stripe offers the methods that can pay it) whose SetupIntent carries
        ``metadata.user_id``; ``setup_intent.succeeded`` then names the saved card.
        Returns ``(customer_id, session_id, url)``. Raises :class:`PaymentProviderError`."""
        try:
            if customer_id is None:
                customer = self._stripe().v1.customers.create(
                    params={"metadata": {"user_id": str(user_id)}},
                    options={"idempotency_key": f"modelbank-customer-{user_id}"},
                )
                customer_id = str(customer.id)
            session = self._stripe().v1.checkout.sessions.create(
                params={
                    "mode": "setup",
                    "customer": customer_id,
                    "currency": currency,
                    "client_reference_id": f"user-{user_id}",
                    "metadata": {"user_id": str(user_id), "purpose": "auto_topup"},
                    "setup_intent_data": {
                        "metadata": {"user_id": str(user_id), "purpose": "auto_topup"}
                    },
                    "success_url": success_url,
                    "cancel_url": cancel_url,
                }
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc, user_id=user_id) from None
        url = getattr(session, "url", None)
        if not isinstance(url, str) or not isinstance(getattr(session, "id", None), str):
            raise PaymentProviderError(
                "Stripe answered without a setup session id or URL", provider="stripe"
            )
        return customer_id, str(session.id), url

    def charge_saved(
        self, request: CheckoutRequest, customer_id: str, payment_method_id: str
    ) -> Checkout:
        """Charge a saved card off-session for an auto top-up: a PaymentIntent, confirmed at
        once (``off_session``), idempotency key ``modelbank-autotopup-<purchase_id>``, with
        the purchase's metadata and ``origin=auto_topup``. The credits still arrive only with
        the signed ``payment_intent.succeeded`` webhook. Returns the PaymentIntent id as
        ``external_id``. Raises :class:`PaymentProviderError` (a decline: ``provider_code``
        ``card_declined``, ``authentication_required`` …)."""
        if request.price_cents <= 0:
            raise InvalidInput("a Stripe payment needs a price > 0 cents")
        metadata = {
            "purchase_id": str(request.purchase_id),
            "user_id": str(request.user_id),
            "credits_ucr": str(request.credits_ucr),
            "origin": "auto_topup",
        }
        try:
            intent = self._stripe().v1.payment_intents.create(
                params={
                    "amount": request.price_cents,
                    "currency": request.currency,
                    "customer": customer_id,
                    "payment_method": payment_method_id,
                    "off_session": True,
                    "confirm": True,
                    "description": f"Auto top-up: {request.package_name}",
                    "metadata": metadata,
                },
                options={"idempotency_key": f"modelbank-autotopup-{request.purchase_id}"},
            )
        except stripe.StripeError as exc:
            raise _provider_error(exc, purchase_id=request.purchase_id) from None
        intent_id = getattr(intent, "id", None)
        if not isinstance(intent_id, str) or not intent_id:
            raise PaymentProviderError(
                "Stripe answered without a PaymentIntent id", provider="stripe"
            )
        return Checkout(provider=self.name, external_id=intent_id, checkout_url=None)

    def parse_webhook(self, payload: bytes, signature_header: str | None) -> PaymentEvent:
        """Verify a webhook delivery (raw body + ``Stripe-Signature`` header) with this
        endpoint's signing secret and tolerance, and map it:
        :func:`modelbank.wallets.stripe_events.parse_webhook` (the mapping, what it raises)."""
        return stripe_events.parse_webhook(
            payload, signature_header, self._webhook_secret, self._tolerance_s
        )


def _provider_error(exc: stripe.StripeError, **context: Any) -> PaymentProviderError:
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        what = "Stripe rejected the API key (check MODELBANK_STRIPE_SECRET_KEY)"
    elif isinstance(exc, stripe.APIConnectionError):
        what = "could not reach Stripe"
    elif isinstance(exc, stripe.RateLimitError):
        what = "Stripe is rate limiting requests; try again shortly"
    elif isinstance(exc, stripe.IdempotencyError):
        what = "Stripe refused a reused idempotency key with different parameters"
    else:
        detail = exc.user_message or getattr(exc, "_message", None) or type(exc).__name__
        what = f"Stripe refused the checkout session: {scrub(str(detail))}"
    return PaymentProviderError(
        what,
        provider="stripe",
        http_status=exc.http_status,
        provider_code=exc.code,
        request_id=exc.request_id,
        **context,
    )


# --------------------------------------------------------------------------- factories
