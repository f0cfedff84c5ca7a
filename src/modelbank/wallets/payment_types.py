"""The provider-neutral values a payment provider adapter takes and returns (DESIGN §5): the
:class:`CheckoutRequest` the wallet service asks to collect, the started :class:`Checkout`,
the verified :class:`PaymentEvent`, and the :class:`PaymentProvider` protocol.

Money here is in **cents** (the provider edge, DESIGN §2); credits in µcr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from modelbank.errors import InvalidInput

_CURRENCY = re.compile(r"[a-z]{3}")


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
    saved (PAYMENT_METHOD_SAVED); ``reason``: why a payment failed (FAILED); ``currency``:
    the lowercase ISO 4217 code of ``amount_cents`` (COMPLETED), compared with the purchase's
    before anything is granted.
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
    currency: str | None = None
    charged_cents: int | None = None
    """REFUNDED from Stripe: what the refunded charge collected (the charge's ``amount``,
    in ``currency``), compared with the purchase's price when the refund overtakes the
    completion (so an underpaid payment refunded first still grants nothing)."""


class PaymentProvider(Protocol):
    """A payment provider adapter: starts a checkout for a purchase."""

    name: str

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Start collecting ``request.price_cents`` for the purchase; never grants credits.

        Raises :class:`PaymentProviderError` when the provider fails or refuses.
        """
        ...
