"""Offline Stripe test helpers: signed webhook payloads and a stub of the SDK's HTTP client.

Nothing here reaches the network. Reuse them from any test::

    from tests.wallets.stripe_fixtures import (
        WEBHOOK_SECRET, FakeStripeHTTP, checkout_session_completed, signed_event,
    )

    fake = FakeStripeHTTP()
    provider = StripeProvider(SECRET_KEY, WEBHOOK_SECRET, http_client=fake)
    checkout = provider.create_checkout(request)          # answered by ``fake``
    body, header = signed_event(
        WEBHOOK_SECRET, "checkout.session.completed",
        checkout_session_completed(session_id=checkout.external_id, purchase_id=7),
        event_id="evt_1",
    )
    # POST body to /api/v1/webhooks/stripe with header "Stripe-Signature: <header>"

Signatures come from the SDK's own helper,
``stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=None)``
(``stripe/_webhook.py``), so they are exactly what ``stripe.Webhook.construct_event`` checks.

Telemetry: with ``stripe.enable_telemetry`` (the SDK default) every API request also reads
or creates ``~/.config/stripe/telemetry_id``; call :func:`disable_stripe_telemetry` (e.g. in an
autouse fixture with ``monkeypatch``) to keep tests off the home directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import stripe

SECRET_KEY = "sk_test_modelbank_0000000000"
"""A Stripe-shaped secret key for tests (never valid anywhere)."""

WEBHOOK_SECRET = "whsec_modelbank_test_0000000000"
"""A Stripe-shaped webhook signing secret for tests."""


def disable_stripe_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn the SDK's client telemetry off for one test (no ``~/.config/stripe`` file, no
    ``X-Stripe-Client-Telemetry`` header)."""
    monkeypatch.setattr(stripe, "enable_telemetry", False)


# --------------------------------------------------------------------------- webhooks


def stripe_event(
    type: str,
    obj: Mapping[str, Any],
    *,
    event_id: str = "evt_test_1",
    created: int | None = None,
) -> dict[str, Any]:
    """A v1 snapshot event envelope (``{"object": "event", "type": …, "data": {"object": …}}``)
    as Stripe delivers it; ``created`` is Unix seconds (default: now)."""
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
        "data": {"object": dict(obj)},
    }


def sign(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``payload`` (``t=…,v1=…``), made by the SDK's
    signing helper; ``timestamp`` in Unix seconds (default: now; pass an old one for a stale
    signature)."""
    header: str = stripe.WebhookSignature.generate_signature_header(
        payload.decode("utf-8"), secret, timestamp=timestamp
    )
    return header


def signed_event(
    secret: str,
    type: str,
    obj: Mapping[str, Any],
    *,
    event_id: str = "evt_test_1",
    created: int | None = None,
    timestamp: int | None = None,
) -> tuple[bytes, str]:
    """``(payload_bytes, signature_header)`` of a ``type`` event around ``obj``, signed with
    ``secret``. ``created``: the event's time (ordering); ``timestamp``: the signature's time
    (freshness); both Unix seconds, default now."""
    payload = json.dumps(stripe_event(type, obj, event_id=event_id, created=created)).encode()
    return payload, sign(payload, secret, timestamp=timestamp)


def _checkout_session(
    *,
    session_id: str,
    purchase_id: int | None,
    user_id: int,
    credits_ucr: int,
    amount_total: int,
    currency: str,
    status: str,
    payment_status: str,
    payment_intent: str | None,
) -> dict[str, Any]:
    metadata = (
        {}
        if purchase_id is None
        else {
            "purchase_id": str(purchase_id),
            "user_id": str(user_id),
            "credits_ucr": str(credits_ucr),
        }
    )
    return {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "client_reference_id": None if purchase_id is None else str(purchase_id),
        "currency": currency,
        "livemode": False,
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": payment_intent,
        "payment_status": payment_status,
        "status": status,
        "url": None,
    }


def checkout_session_completed(
    *,
    session_id: str = "cs_test_1",
    purchase_id: int | None = 1,
    user_id: int = 1,
    credits_ucr: int = 50_000_000,
    amount_total: int = 499,
    currency: str = "usd",
    payment_status: str = "paid",
    payment_intent: str | None = "pi_test_1",
) -> dict[str, Any]:
    """A completed Checkout Session object (the ``data.object`` of
    ``checkout.session.completed`` / ``…async_payment_succeeded``), with the metadata and
    ``client_reference_id`` modelbank sets. ``payment_status="unpaid"`` models a delayed
    (async) payment method; ``purchase_id=None`` a session another integration made."""
    return _checkout_session(
        session_id=session_id,
        purchase_id=purchase_id,
        user_id=user_id,
        credits_ucr=credits_ucr,
        amount_total=amount_total,
        currency=currency,
        status="complete",
        payment_status=payment_status,
        payment_intent=payment_intent,
    )


def session_expired(
    *,
    session_id: str = "cs_test_1",
    purchase_id: int | None = 1,
    user_id: int = 1,
    credits_ucr: int = 50_000_000,
    amount_total: int = 499,
    currency: str = "usd",
) -> dict[str, Any]:
    """An expired, unpaid Checkout Session object (``checkout.session.expired``)."""
    return _checkout_session(
        session_id=session_id,
        purchase_id=purchase_id,
        user_id=user_id,
        credits_ucr=credits_ucr,
        amount_total=amount_total,
        currency=currency,
        status="expired",
        payment_status="unpaid",
        payment_intent=None,
    )


def charge_refunded(
    *,
    charge_id: str = "ch_test_1",
    payment_intent: str | None = "pi_test_1",
    amount: int = 499,
    amount_refunded: int = 499,
    purchase_id: int | None = 1,
    user_id: int = 1,
    credits_ucr: int = 50_000_000,
    currency: str = "usd",
) -> dict[str, Any]:
    """A Charge object after a refund (``charge.refunded``): ``amount_refunded`` is the total
    refunded so far (cents), ``refunded`` is true once it reaches ``amount``. The metadata is
    the PaymentIntent's (``purchase_id=None`` leaves it empty)."""
    metadata = (
        {}
        if purchase_id is None
        else {
            "purchase_id": str(purchase_id),
            "user_id": str(user_id),
            "credits_ucr": str(credits_ucr),
        }
    )
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "currency": currency,
        "livemode": False,
        "metadata": metadata,
        "paid": True,
        "payment_intent": payment_intent,
        "refunded": amount_refunded >= amount,
        "status": "succeeded",
    }


# --------------------------------------------------------------------------- HTTP stub


@dataclass(frozen=True)
class RecordedRequest:
    """One request the SDK sent: ``form`` is the decoded ``application/x-www-form-urlencoded``
    body, keyed the Stripe way (``"line_items[0][price_data][unit_amount]"``)."""

    method: str
    url: str
    headers: dict[str, str]
    body: str
    form: dict[str, str]


class FakeStripeHTTP(stripe.HTTPClient):
    """A ``stripe.HTTPClient`` that answers from memory; pass it as
    ``StripeClient(..., http_client=fake)`` (``StripeProvider(..., http_client=fake)``).

    ``POST /v1/checkout/sessions`` returns a canned Checkout Session built from the request
    (id ``cs_test_<n>``, ``url`` ``https://checkout.stripe.com/c/pay/cs_test_<n>``, amount,
    currency, metadata echoed); ``POST /v1/customers`` a customer ``cus_test_<n>``;
    ``POST /v1/payment_intents`` a ``succeeded`` PaymentIntent ``pi_test_<n>``. Like Stripe,
    a repeated ``Idempotency-Key`` with the same body replays the first answer and with a
    different body answers 400 ``idempotency_error``.
    Queue other answers with :meth:`fail_next` (error JSON) or :meth:`respond_next`. Every
    request is kept in ``requests``; retries do not sleep.
    """

    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RecordedRequest] = []
        self.queued: list[tuple[int, dict[str, Any]]] = []
        self.sessions_created = 0
        self._replays: dict[str, tuple[str, tuple[str, int, Mapping[str, str]]]] = {}

    # -- configuring answers

    def fail_next(
        self,
        status: int,
        *,
        error_type: str = "invalid_request_error",
        message: str = "Something went wrong",
        code: str | None = None,
    ) -> None:
        """Answer the next request with HTTP ``status`` and a Stripe error body."""
        error: dict[str, Any] = {"type": error_type, "message": message}
        if code is not None:
            error["code"] = code
        self.queued.append((status, {"error": error}))

    def respond_next(self, status: int, body: dict[str, Any]) -> None:
        """Answer the next request with ``status`` and JSON ``body`` as given."""
        self.queued.append((status, body))

    @property
    def last(self) -> RecordedRequest:
        """The most recent request (``IndexError`` when none was made)."""
        return self.requests[-1]

    # -- the HTTPClient seam

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        body = post_data.decode() if isinstance(post_data, bytes) else (post_data or "")
        recorded = RecordedRequest(
            method=method,
            url=url,
            headers=dict(headers or {}),
            body=body,
            form=dict(parse_qsl(body, keep_blank_values=True)),
        )
        self.requests.append(recorded)
        # Case-insensitive like a real client's headers: the SDK reads both "Request-Id" and
        # "request-id".
        response_headers = httpx.Headers({"Request-Id": f"req_test_{len(self.requests)}"})
        if self.queued:
            status, queued_body = self.queued.pop(0)
            return json.dumps(queued_body), status, response_headers
        key = recorded.headers.get("Idempotency-Key")
        if key is not None and key in self._replays:
            first_body, first_answer = self._replays[key]
            if first_body == body:
                return first_answer
            conflict = {
                "error": {
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same"
                    " parameters they were first used with.",
                }
            }
            return json.dumps(conflict), 400, response_headers
        made: dict[str, Any] | None = None
        if method == "post" and url.endswith("/v1/checkout/sessions"):
            made = self._session(recorded.form)
        elif method == "post" and url.endswith("/v1/customers"):
            made = {"id": f"cus_test_{len(self.requests)}", "object": "customer"}
        elif method == "post" and url.endswith("/v1/payment_intents"):
            made = self._intent(recorded.form)
        if made is not None:
            answer: tuple[str, int, Mapping[str, str]] = (
                json.dumps(made),
                200,
                response_headers,
            )
        else:
            missing = {"error": {"type": "invalid_request_error", "message": "Unrecognized URL"}}
            answer = (json.dumps(missing), 404, response_headers)
        if key is not None:
            self._replays[key] = (body, answer)
        return answer

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        raise NotImplementedError("FakeStripeHTTP does not stream")

    def close(self) -> None:
        """Nothing to close."""

    def _sleep_time_seconds(self, num_retries: int) -> float:
        return 0.0

    def _intent(self, form: Mapping[str, str]) -> dict[str, Any]:
        """A PaymentIntent confirmed off-session at once (``succeeded``), metadata echoed."""
        metadata = {
            key.removeprefix("metadata[").removesuffix("]"): value
            for key, value in form.items()
            if key.startswith("metadata[")
        }
        return {
            "id": f"pi_test_{len(self.requests)}",
            "object": "payment_intent",
            "amount": int(form.get("amount", "0")),
            "currency": form.get("currency"),
            "customer": form.get("customer"),
            "payment_method": form.get("payment_method"),
            "metadata": metadata,
            "status": "succeeded",
        }

    def _session(self, form: Mapping[str, str]) -> dict[str, Any]:
        self.sessions_created += 1
        session_id = f"cs_test_{self.sessions_created}"
        amount = int(form.get("line_items[0][price_data][unit_amount]", "0"))
        metadata = {
            key.removeprefix("metadata[").removesuffix("]"): value
            for key, value in form.items()
            if key.startswith("metadata[")
        }
        return {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": form.get("cancel_url"),
            "client_reference_id": form.get("client_reference_id"),
            "currency": form.get("line_items[0][price_data][currency]"),
            "livemode": False,
            "metadata": metadata,
            "mode": form.get("mode"),
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": form.get("success_url"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
