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
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
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

PROVIDER_NAMES = ("manual", "stripe")
"""Names :func:`provider_for` accepts."""

STRIPE_WEBHOOK_TOLERANCE_S = 300
"""How far a Stripe webhook signature's timestamp may be from now, in seconds, in either
direction (the SDK's default for the past; the same for the future, issue 16 D11: a
correctly signed event dated later than now + tolerance was made with a wrong clock or
prepared for a later replay, and is refused)."""

STRIPE_TIMEOUT_S = 30.0
"""Seconds the default Stripe HTTP client waits for an API response."""

_CURRENCY = re.compile(r"[a-z]{3}")
_SECRET_LIKE = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z*]+|\bwhsec_[0-9A-Za-z*]+")


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """What the wallet service asks a provider to collect.

    ``purchase_id``/``user_id``: the purchase row and buyer; ``credits_ucr``: credits the
    package grants (µcr, > 0); ``price_cents``: the price in the currency's minor unit (≥ 0);
    ``currency``: lowercase ISO 4217 code (``"usd"``); ``success_url``/``cancel_url``: where
    the provider sends the buyer back to.

    Raises :class:`~modelbank.errors.InvalidInput` for a negative price, non-positive credits
    or a currency that is not three lowercase letters.
    """

    purchase_id: int
    user_id: int
    package_name: str
    credits_ucr: int
    price_cents: int
    currency: str
    success_url: str
    cancel_url: str

    def __post_init__(self) -> None:
        if self.price_cents < 0:
            raise InvalidInput("price_cents must be ≥ 0", price_cents=self.price_cents)
        if self.credits_ucr <= 0:
            raise InvalidInput("credits_ucr must be > 0", credits_ucr=self.credits_ucr)
        if not _CURRENCY.fullmatch(self.currency):
            raise InvalidInput(
                "currency must be a lowercase ISO 4217 code such as 'usd'",
                currency=self.currency,
            )


@dataclass(frozen=True, slots=True)
class Checkout:
    """A started checkout.

    ``provider``: ``"stripe"`` or ``"manual"``; ``external_id``: the Stripe Checkout Session id
    (``cs_…``) or ``"manual_<purchase_id>"``, stored on the purchase to match webhooks;
    ``checkout_url``: where to send the buyer (``None`` for manual).
    """

    provider: str
    external_id: str
    checkout_url: str | None


class PaymentEventKind(StrEnum):
    """What a verified provider event means for a purchase."""

    COMPLETED = "completed"
    """Paid: grant the credits (once)."""
    EXPIRED = "expired"
    """The checkout ended unpaid (expired, or an async payment failed): close the purchase."""
    REFUNDED = "refunded"
    """Money went back to the buyer; ``amount_cents`` is the cumulative refunded amount."""
    IGNORED = "ignored"
    """Nothing to do (an unpaid completion awaiting an async payment, or an unrelated type)."""
    FAILED = "failed"
    """An off-session payment (auto top-up) was declined: close the purchase as failed."""
    PAYMENT_METHOD_SAVED = "card_saved"
    """A setup session saved a card: ``user_id``, ``customer_id``, ``payment_method_id``."""


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """A verified provider event, provider-neutral.

    ``event_id``: the provider's event id (``evt_…``), unique per event: deduplicate on it
    (Stripe delivers at least once). ``external_id``: the Checkout Session id when the event
    carries one (``None`` for ``charge.refunded``). ``purchase_id``: from the object's
    metadata or ``client_reference_id`` (``None`` when absent or not an integer, e.g. a session
    some other integration created). ``payment_reference``: the PaymentIntent id (``pi_…``).
    ``amount_cents``: amount paid (COMPLETED; ``amount_total``) or refunded so far in total
    (REFUNDED; the charge's ``amount_refunded``, cumulative, not this refund's delta); ``None``
    otherwise. ``created``: the event's Unix time in seconds, for ordering out-of-order
    deliveries. ``user_id``, ``customer_id``, ``payment_method_id``: the card a setup session
    saved (PAYMENT_METHOD_SAVED); ``reason``: why a payment failed (FAILED).
    """

    provider: str
    event_id: str
    kind: PaymentEventKind
    external_id: str | None
    purchase_id: int | None
    payment_reference: str | None
    amount_cents: int | None
    created: int | None
    user_id: int | None = None
    customer_id: str | None = None
    payment_method_id: str | None = None
    reason: str | None = None


class PaymentProvider(Protocol):
    """A payment provider adapter: starts a checkout for a purchase."""

    name: str

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Start collecting ``request.price_cents`` for the purchase; never grants credits.

        Raises :class:`PaymentProviderError` when the provider fails or refuses.
        """
        ...


# --------------------------------------------------------------------------- manual


class ManualProvider:
    """No payment page: an operator confirms the payment (through the wallet service)."""

    name: str = "manual"

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Return ``Checkout("manual", "manual_<purchase_id>", None)``; never fails."""
        return Checkout(
            provider=self.name,
            external_id=f"manual_{request.purchase_id}",
            checkout_url=None,
        )


# --------------------------------------------------------------------------- stripe


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
        """Verify a webhook delivery (raw body + ``Stripe-Signature`` header) and map it.

        Mapping: ``checkout.session.completed`` with ``payment_status`` ``paid`` (or
        ``no_payment_required``) → COMPLETED (``amount_total``), with ``unpaid`` → IGNORED
        (an async payment is pending; its outcome follows as another event);
        ``checkout.session.async_payment_succeeded`` → COMPLETED;
        ``checkout.session.expired`` and ``checkout.session.async_payment_failed`` → EXPIRED;
        ``charge.refunded`` → REFUNDED (``amount_refunded``, cumulative; ``payment_intent``;
        purchase id from the charge's metadata when present); anything else → IGNORED.

        Raises :class:`PaymentProviderNotConfigured` without a webhook secret,
        :class:`WebhookSignatureInvalid` for a missing, malformed or wrong signature or a
        timestamp further than the tolerance from now (past or future), and
        :class:`~modelbank.errors.InvalidInput` for a correctly signed body that is not a
        Stripe event.
        """
        if not self._webhook_secret:
            raise PaymentProviderNotConfigured(
                "Stripe webhooks are not configured: set MODELBANK_STRIPE_WEBHOOK_SECRET",
                provider="stripe",
                setting="stripe_webhook_secret",
            )
        try:
            event: stripe.Event = stripe.Webhook.construct_event(
                payload, signature_header, self._webhook_secret, tolerance=self._tolerance_s
            )
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureInvalid(
                f"Stripe webhook signature is invalid: {_scrub(exc.user_message or str(exc))}",
                provider="stripe",
            ) from None
        except UnicodeDecodeError:
            raise WebhookSignatureInvalid(
                "Stripe webhook body is not UTF-8, so its signature cannot match",
                provider="stripe",
            ) from None
        except ValueError as exc:  # json.JSONDecodeError, or a thin (v2) event notification
            raise InvalidInput(
                f"signed Stripe webhook body is not a Stripe snapshot event: {exc}",
                provider="stripe",
            ) from None
        # the SDK checks the past side only
        signed_at = _signature_time(signature_header)
        if signed_at is not None and signed_at > time.time() + self._tolerance_s:
            raise WebhookSignatureInvalid(
                "Stripe webhook signature timestamp is in the future (beyond the"
                f" {self._tolerance_s} s tolerance)",
                provider="stripe",
            )
        return _map_event(event.to_dict())


def _signature_time(header: str | None) -> int | None:
    """The ``t=`` timestamp (Unix seconds) of a ``Stripe-Signature`` header, or None when
    there is none (the SDK then refuses the header itself)."""
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _map_event(data: Mapping[str, Any]) -> PaymentEvent:
    event_type = data.get("type")
    event_id = data.get("id")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise InvalidInput("Stripe event without an id or type", provider="stripe")
    if len(event_id) > MAX_REF:
        raise InvalidInput(f"Stripe event id longer than {MAX_REF} characters", provider="stripe")
    created = _int(data, "created")
    inner = data.get("data")
    obj: Mapping[str, Any] = {}
    if isinstance(inner, Mapping) and isinstance(inner.get("object"), Mapping):
        obj = inner["object"]

    def event(kind: PaymentEventKind, **fields: Any) -> PaymentEvent:
        return PaymentEvent(
            provider="stripe",
            event_id=event_id,
            kind=kind,
            external_id=fields.get("external_id"),
            purchase_id=fields.get("purchase_id"),
            payment_reference=fields.get("payment_reference"),
            amount_cents=fields.get("amount_cents"),
            created=created,
        )

    if event_type.startswith("checkout.session.") and obj.get("mode") == "setup":
        return event(PaymentEventKind.IGNORED)  # a card saved: setup_intent.succeeded says which
    if event_type.startswith("checkout.session."):
        session = {
            "external_id": _str(obj, "id"),
            "purchase_id": _purchase_id(obj),
            "payment_reference": _ref(obj, "payment_intent"),
        }
        paid = event_type == "checkout.session.async_payment_succeeded" or (
            event_type == "checkout.session.completed"
            and obj.get("payment_status") in ("paid", "no_payment_required")
        )
        if paid:
            return event(
                PaymentEventKind.COMPLETED, amount_cents=_amount(obj, "amount_total"), **session
            )
        if event_type in ("checkout.session.expired", "checkout.session.async_payment_failed"):
            return event(PaymentEventKind.EXPIRED, **session)
        return event(PaymentEventKind.IGNORED, **session)
    if event_type.startswith(("payment_intent.", "setup_intent.")):
        return _map_saved_card(event_type, obj, event)
    if event_type == "charge.refunded":
        return event(
            PaymentEventKind.REFUNDED,
            purchase_id=_purchase_id(obj),
            payment_reference=_ref(obj, "payment_intent"),
            amount_cents=_amount(obj, "amount_refunded"),
        )
    return event(PaymentEventKind.IGNORED)


def _map_saved_card(
    event_type: str, obj: Mapping[str, Any], event: Callable[..., PaymentEvent]
) -> PaymentEvent:
    """Auto top-up's events: ``payment_intent.succeeded`` / ``payment_failed`` of an
    off-session top-up (``metadata.origin == "auto_topup"``; other PaymentIntents, such as a
    Checkout's, are IGNORED: their session's events complete them) and
    ``setup_intent.succeeded`` of a card saved for auto top-up."""
    metadata = obj.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    if event_type.startswith("setup_intent."):
        user = meta.get("user_id")
        if event_type != "setup_intent.succeeded" or meta.get("purpose") != "auto_topup":
            return event(PaymentEventKind.IGNORED)
        if not (isinstance(user, str) and user.isascii() and user.isdigit() and len(user) < 19):
            return event(PaymentEventKind.IGNORED)
        return replace(
            event(PaymentEventKind.PAYMENT_METHOD_SAVED),
            user_id=int(user),
            customer_id=_ref(obj, "customer"),
            payment_method_id=_ref(obj, "payment_method"),
        )
    if meta.get("origin") != "auto_topup":
        return event(PaymentEventKind.IGNORED)
    fields = {
        "external_id": _str(obj, "id"),
        "purchase_id": _purchase_id(obj),
        "payment_reference": _str(obj, "id"),
    }
    if event_type == "payment_intent.succeeded":
        return event(
            PaymentEventKind.COMPLETED, amount_cents=_amount(obj, "amount_received"), **fields
        )
    if event_type == "payment_intent.payment_failed":
        error = obj.get("last_payment_error")
        reason = "the payment was declined"
        if isinstance(error, Mapping):
            reason = _scrub(str(error.get("code") or error.get("message") or reason))[:200]
        return replace(event(PaymentEventKind.FAILED, **fields), reason=reason)
    return event(PaymentEventKind.IGNORED, **fields)


MAX_REF = 255
"""The longest Stripe id stored (the columns' length); a longer one is refused."""
MAX_AMOUNT_CENTS = 10**12
"""The largest amount accepted (cents; its µUSD fit a BIGINT many times over)."""


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    """A non-empty string field. Raises :class:`InvalidInput` past :data:`MAX_REF`."""
    value = obj.get(key)
    if isinstance(value, str) and len(value) > MAX_REF:
        raise InvalidInput(f"Stripe {key} longer than {MAX_REF} characters", provider="stripe")
    return value if isinstance(value, str) and value else None


def _amount(obj: Mapping[str, Any], key: str) -> int | None:
    """An amount in cents. Raises :class:`InvalidInput` outside 0…:data:`MAX_AMOUNT_CENTS`."""
    cents = _int(obj, key)
    if cents is not None and not 0 <= cents <= MAX_AMOUNT_CENTS:
        raise InvalidInput(f"Stripe {key} {cents} is out of range", provider="stripe")
    return cents


def _int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ref(obj: Mapping[str, Any], key: str) -> str | None:
    """An id field that may be expanded into an object (``{"id": …}``)."""
    value = obj.get(key)
    if isinstance(value, Mapping):
        return _str(value, "id")
    return _str(obj, key)


def _purchase_id(obj: Mapping[str, Any]) -> int | None:
    metadata = obj.get("metadata")
    candidates = [metadata.get("purchase_id") if isinstance(metadata, Mapping) else None]
    candidates.append(obj.get("client_reference_id"))
    for value in candidates:
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
            return int(value)  # past 18 digits no purchase of ours (BIGINT): not ours
    return None


def _scrub(text: str) -> str:
    """Remove anything shaped like a Stripe key or signing secret from ``text``."""
    return _SECRET_LIKE.sub("<redacted>", text)


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
        what = f"Stripe refused the checkout session: {_scrub(str(detail))}"
    return PaymentProviderError(
        what,
        provider="stripe",
        http_status=exc.http_status,
        provider_code=exc.code,
        request_id=exc.request_id,
        **context,
    )


# --------------------------------------------------------------------------- factories


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
