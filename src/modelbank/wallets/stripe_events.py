"""Stripe webhooks (DESIGN §5): verify a delivery's signature with the official SDK and map
the event to a provider-neutral :class:`~modelbank.wallets.payment_types.PaymentEvent`.
Holds no database code and grants nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import stripe

from modelbank.errors import InvalidInput
from modelbank.wallets.errors import PaymentProviderNotConfigured, WebhookSignatureInvalid
from modelbank.wallets.payment_types import PaymentEvent, PaymentEventKind

STRIPE_WEBHOOK_TOLERANCE_S = 300
"""How far a Stripe webhook signature's timestamp may be from now, in seconds, in either
direction (the SDK's default for the past; the same for the future, issue 16 D11: a
correctly signed event dated later than now + tolerance was made with a wrong clock or
prepared for a later replay, and is refused)."""


_SECRET_LIKE = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z*]+|\bwhsec_[0-9A-Za-z*]+")


def parse_webhook(
    payload: bytes, signature_header: str | None, webhook_secret: str | None, tolerance_s: int
) -> PaymentEvent:
    """Verify a webhook delivery (raw body + ``Stripe-Signature`` header) and map it.

    Mapping: ``checkout.session.completed`` with ``payment_status`` ``paid`` (or
    ``no_payment_required``) → COMPLETED (``amount_total`` and ``currency``, which the
    purchase compares with its price before granting), with ``unpaid`` → IGNORED
    (an async payment is pending; its outcome follows as another event);
    ``checkout.session.async_payment_succeeded`` → COMPLETED;
    ``checkout.session.expired`` and ``checkout.session.async_payment_failed`` → EXPIRED;
    ``charge.refunded`` → REFUNDED (``amount_refunded``, cumulative; the charge's ``amount``
    and ``currency``; ``payment_intent``;
    purchase id from the charge's metadata when present); anything else → IGNORED.

    Raises :class:`PaymentProviderNotConfigured` without a webhook secret,
    :class:`WebhookSignatureInvalid` for a missing, malformed or wrong signature or a
    timestamp further than the tolerance from now (past or future), and
    :class:`~modelbank.errors.InvalidInput` for a correctly signed body that is not a
    Stripe event.
    """
    if not webhook_secret:
        raise PaymentProviderNotConfigured(
            "Stripe webhooks are not configured: set MODELBANK_STRIPE_WEBHOOK_SECRET",
            provider="stripe",
            setting="stripe_webhook_secret",
        )
    try:
        event: stripe.Event = stripe.Webhook.construct_event(
            payload, signature_header, webhook_secret, tolerance=tolerance_s
        )
    except stripe.SignatureVerificationError as exc:
        raise WebhookSignatureInvalid(
            f"Stripe webhook signature is invalid: {scrub(exc.user_message or str(exc))}",
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
    if signed_at is not None and signed_at > time.time() + tolerance_s:
        raise WebhookSignatureInvalid(
            "Stripe webhook signature timestamp is in the future (beyond the"
            f" {tolerance_s} s tolerance)",
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
            return replace(
                event(
                    PaymentEventKind.COMPLETED, amount_cents=_amount(obj, "amount_total"), **session
                ),
                currency=_currency(obj),
            )
        if event_type in ("checkout.session.expired", "checkout.session.async_payment_failed"):
            return event(PaymentEventKind.EXPIRED, **session)
        return event(PaymentEventKind.IGNORED, **session)
    if event_type.startswith(("payment_intent.", "setup_intent.")):
        return _map_saved_card(event_type, obj, event)
    if event_type == "charge.refunded":
        return replace(
            event(
                PaymentEventKind.REFUNDED,
                purchase_id=_purchase_id(obj),
                payment_reference=_ref(obj, "payment_intent"),
                amount_cents=_amount(obj, "amount_refunded"),
            ),
            charged_cents=_amount(obj, "amount"),
            currency=_currency(obj),
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
        return replace(
            event(
                PaymentEventKind.COMPLETED, amount_cents=_amount(obj, "amount_received"), **fields
            ),
            currency=_currency(obj),
        )
    if event_type == "payment_intent.payment_failed":
        error = obj.get("last_payment_error")
        reason = "the payment was declined"
        if isinstance(error, Mapping):
            reason = scrub(str(error.get("code") or error.get("message") or reason))[:200]
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


def _currency(obj: Mapping[str, Any]) -> str | None:
    """The object's ``currency``, lower case (Stripe's three-letter ISO code; anything else
    is kept as given, truncated, and so never matches a purchase's currency)."""
    value = _str(obj, "currency")
    return None if value is None else value.lower()[:16]


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


def scrub(text: str) -> str:
    """Remove anything shaped like a Stripe key or signing secret from ``text``."""
    return _SECRET_LIKE.sub("<redacted>", text)
