"""Payment provider adapters (DESIGN §5): manual, and Stripe through the official SDK.

No test reaches the network: API calls go to :class:`FakeStripeHTTP` (the SDK's
``HTTPClient`` seam) and webhooks are signed with the SDK's own signing helper.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from modelbank.config import Settings
from modelbank.errors import InvalidInput
from modelbank.wallets.errors import (
    PaymentProviderError,
    PaymentProviderNotConfigured,
    WebhookSignatureInvalid,
)
from modelbank.wallets.providers import (
    Checkout,
    CheckoutRequest,
    ManualProvider,
    PaymentEvent,
    PaymentEventKind,
    StripeProvider,
    provider_for,
    stripe_from_settings,
)
from tests.wallets.stripe_fixtures import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    FakeStripeHTTP,
    charge_refunded,
    checkout_session_completed,
    disable_stripe_telemetry,
    session_expired,
    sign,
    signed_event,
)


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    disable_stripe_telemetry(monkeypatch)


@pytest.fixture
def fake() -> FakeStripeHTTP:
    return FakeStripeHTTP()


@pytest.fixture
def provider(fake: FakeStripeHTTP) -> StripeProvider:
    return StripeProvider(SECRET_KEY, WEBHOOK_SECRET, http_client=fake)


def request(**overrides: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "purchase_id": 7,
        "user_id": 3,
        "package_name": "Popular",
        "credits_ucr": 200_000_000,
        "price_cents": 1799,
        "currency": "usd",
        "success_url": "https://app.example/credits/done?purchase=7",
        "cancel_url": "https://app.example/credits",
    }
    fields.update(overrides)
    return CheckoutRequest(**fields)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"stripe_secret_key": None, "stripe_webhook_secret": None}
    values.update(overrides)
    return Settings(**values)


# --------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("field", "value"),
    [("price_cents", -1), ("credits_ucr", 0), ("currency", "USD"), ("currency", "dollars")],
)
def test_checkout_request_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(InvalidInput):
        request(**{field: value})


# --------------------------------------------------------------------------- manual


def test_manual_checkout_has_no_url_and_a_stable_id() -> None:
    checkout = ManualProvider().create_checkout(request(purchase_id=42))
    assert checkout == Checkout(provider="manual", external_id="manual_42", checkout_url=None)
    assert ManualProvider().create_checkout(request(purchase_id=42)) == checkout


# --------------------------------------------------------------------------- factories


def test_provider_for_manual_needs_no_settings() -> None:
    assert isinstance(provider_for("manual", settings()), ManualProvider)


def test_provider_for_stripe_without_key_is_not_configured() -> None:
    with pytest.raises(PaymentProviderNotConfigured) as caught:
        provider_for("stripe", settings())
    assert caught.value.code == "payment_provider_not_configured"
    assert caught.value.context["setting"] == "stripe_secret_key"


def test_provider_for_unknown_name_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        provider_for("paypal", settings())
    assert "paypal" in str(caught.value)


def test_stripe_from_settings_uses_both_secrets(fake: FakeStripeHTTP) -> None:
    configured = settings(stripe_secret_key=SECRET_KEY, stripe_webhook_secret=WEBHOOK_SECRET)
    provider = provider_for("stripe", configured, http_client=fake)
    assert isinstance(provider, StripeProvider)
    provider.create_checkout(request())
    assert fake.last.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    payload, header = signed_event(
        WEBHOOK_SECRET, "checkout.session.completed", checkout_session_completed()
    )
    assert provider.parse_webhook(payload, header).kind is PaymentEventKind.COMPLETED


def test_stripe_from_settings_without_webhook_secret_refuses_webhooks() -> None:
    provider = stripe_from_settings(settings(stripe_secret_key=SECRET_KEY))
    payload, header = signed_event(WEBHOOK_SECRET, "charge.refunded", charge_refunded())
    with pytest.raises(PaymentProviderNotConfigured) as caught:
        provider.parse_webhook(payload, header)
    assert caught.value.context["setting"] == "stripe_webhook_secret"


def test_empty_secret_key_is_not_configured() -> None:
    with pytest.raises(PaymentProviderNotConfigured):
        StripeProvider("  ", WEBHOOK_SECRET)


def test_repr_hides_secrets(provider: StripeProvider) -> None:
    assert SECRET_KEY not in repr(provider)
    assert WEBHOOK_SECRET not in repr(provider)


# --------------------------------------------------------------------------- stripe checkout


def test_create_checkout_sends_one_session_request(
    provider: StripeProvider, fake: FakeStripeHTTP
) -> None:
    checkout = provider.create_checkout(request())

    assert checkout == Checkout(
        provider="stripe",
        external_id="cs_test_1",
        checkout_url="https://checkout.stripe.com/c/pay/cs_test_1",
    )
    sent = fake.last
    assert (sent.method, sent.url) == ("post", "https://api.stripe.com/v1/checkout/sessions")
    assert sent.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.headers["Idempotency-Key"] == "modelbank-purchase-7"
    assert sent.form == {
        "mode": "payment",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "1799",
        "line_items[0][price_data][product_data][name]": "Popular",
        "client_reference_id": "7",
        "metadata[purchase_id]": "7",
        "metadata[user_id]": "3",
        "metadata[credits_ucr]": "200000000",
        "payment_intent_data[metadata][purchase_id]": "7",
        "payment_intent_data[metadata][user_id]": "3",
        "payment_intent_data[metadata][credits_ucr]": "200000000",
        "success_url": "https://app.example/credits/done?purchase=7",
        "cancel_url": "https://app.example/credits",
    }


def test_retried_create_returns_the_same_session(
    provider: StripeProvider, fake: FakeStripeHTTP
) -> None:
    first = provider.create_checkout(request())
    again = provider.create_checkout(request())
    assert again == first
    assert fake.sessions_created == 1
    assert {r.headers["Idempotency-Key"] for r in fake.requests} == {"modelbank-purchase-7"}


def test_server_error_is_retried_with_the_same_idempotency_key(
    provider: StripeProvider, fake: FakeStripeHTTP
) -> None:
    fake.fail_next(500, error_type="api_error", message="Internal")
    checkout = provider.create_checkout(request())
    assert checkout.external_id == "cs_test_1"
    assert [r.headers["Idempotency-Key"] for r in fake.requests] == ["modelbank-purchase-7"] * 2


def test_rejected_key_is_a_provider_error_without_the_key(
    provider: StripeProvider, fake: FakeStripeHTTP
) -> None:
    fake.fail_next(
        401, error_type="invalid_request_error", message=f"Invalid API Key provided: {SECRET_KEY}"
    )
    with pytest.raises(PaymentProviderError) as caught:
        provider.create_checkout(request())
    error = caught.value
    assert error.code == "payment_provider_error"
    assert error.context["http_status"] == 401
    assert error.context["provider"] == "stripe"
    assert SECRET_KEY not in str(error)
    assert SECRET_KEY not in repr(error.context)


def test_refused_parameters_are_reported_scrubbed(
    provider: StripeProvider, fake: FakeStripeHTTP
) -> None:
    fake.fail_next(
        400,
        message=f"Amount must be at least $0.50 usd (key {SECRET_KEY})",
        code="amount_too_small",
    )
    with pytest.raises(PaymentProviderError) as caught:
        provider.create_checkout(request(price_cents=10))
    message = str(caught.value)
    assert "Amount must be at least $0.50 usd" in message
    assert SECRET_KEY not in message
    assert caught.value.context["provider_code"] == "amount_too_small"
    assert caught.value.context["request_id"] == "req_test_1"


def test_idempotency_conflict_is_a_provider_error(
    provider: StripeProvider, fake: FakeStripeHTTP
) -> None:
    provider.create_checkout(request())
    with pytest.raises(PaymentProviderError, match="idempotency key"):
        provider.create_checkout(request(price_cents=3999))


def test_unreachable_stripe_is_a_provider_error() -> None:
    class Down(FakeStripeHTTP):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise stripe.APIConnectionError("connection refused", should_retry=False)

    provider = StripeProvider(SECRET_KEY, None, http_client=Down())
    with pytest.raises(PaymentProviderError, match="could not reach Stripe"):
        provider.create_checkout(request())


def test_answer_without_url_is_a_provider_error(
    provider: StripeProvider, fake: FakeStripeHTTP
) -> None:
    fake.respond_next(200, {"id": "cs_test_x", "object": "checkout.session", "url": None})
    with pytest.raises(PaymentProviderError):
        provider.create_checkout(request())


def test_free_checkout_is_refused_before_calling_stripe(
    provider: StripeProvider, fake: FakeStripeHTTP
) -> None:
    with pytest.raises(InvalidInput):
        provider.create_checkout(request(price_cents=0))
    assert fake.requests == []


# --------------------------------------------------------------------------- stripe webhooks


def parse(provider: StripeProvider, type: str, obj: dict[str, Any], **kw: Any) -> PaymentEvent:
    payload, header = signed_event(WEBHOOK_SECRET, type, obj, **kw)
    return provider.parse_webhook(payload, header)


def test_paid_completion_is_completed(provider: StripeProvider) -> None:
    obj = checkout_session_completed(session_id="cs_1", purchase_id=7, amount_total=1799)
    event = parse(provider, "checkout.session.completed", obj, event_id="evt_a", created=1_700)
    assert event == PaymentEvent(
        provider="stripe",
        event_id="evt_a",
        kind=PaymentEventKind.COMPLETED,
        external_id="cs_1",
        purchase_id=7,
        payment_reference="pi_test_1",
        amount_cents=1799,
        created=1_700,
        currency="usd",
    )
    shouted = checkout_session_completed(purchase_id=7) | {"currency": "EUR"}
    assert parse(provider, "checkout.session.completed", shouted).currency == "eur"


def test_unpaid_completion_is_ignored_until_the_async_payment_succeeds(
    provider: StripeProvider,
) -> None:
    pending = checkout_session_completed(payment_status="unpaid", purchase_id=7)
    event = parse(provider, "checkout.session.completed", pending)
    assert event.kind is PaymentEventKind.IGNORED
    assert (event.external_id, event.purchase_id) == ("cs_test_1", 7)

    paid = checkout_session_completed(purchase_id=7)
    later = parse(provider, "checkout.session.async_payment_succeeded", paid, event_id="evt_2")
    assert later.kind is PaymentEventKind.COMPLETED
    assert later.amount_cents == 499


@pytest.mark.parametrize(
    ("type", "obj"),
    [
        ("checkout.session.expired", session_expired(purchase_id=7)),
        (
            "checkout.session.async_payment_failed",
            checkout_session_completed(payment_status="unpaid", purchase_id=7),
        ),
    ],
)
def test_expiry_and_failed_async_payment_are_expired(
    provider: StripeProvider, type: str, obj: dict[str, Any]
) -> None:
    event = parse(provider, type, obj)
    assert event.kind is PaymentEventKind.EXPIRED
    assert (event.external_id, event.purchase_id, event.amount_cents) == ("cs_test_1", 7, None)


def test_refund_carries_the_cumulative_amount_and_payment_intent(
    provider: StripeProvider,
) -> None:
    obj = charge_refunded(payment_intent="pi_9", amount=1799, amount_refunded=500, purchase_id=7)
    event = parse(provider, "charge.refunded", obj, event_id="evt_r", created=1_800)
    assert event == PaymentEvent(
        provider="stripe",
        event_id="evt_r",
        kind=PaymentEventKind.REFUNDED,
        external_id=None,
        purchase_id=7,
        payment_reference="pi_9",
        amount_cents=500,
        created=1_800,
        charged_cents=1799,
        currency="usd",
    )


def test_refund_without_metadata_still_names_the_payment_intent(
    provider: StripeProvider,
) -> None:
    event = parse(provider, "charge.refunded", charge_refunded(purchase_id=None))
    assert (event.kind, event.purchase_id, event.payment_reference) == (
        PaymentEventKind.REFUNDED,
        None,
        "pi_test_1",
    )


def test_purchase_id_falls_back_to_client_reference_id(provider: StripeProvider) -> None:
    obj = checkout_session_completed(purchase_id=None) | {"client_reference_id": "12"}
    assert parse(provider, "checkout.session.completed", obj).purchase_id == 12


def test_foreign_session_has_no_purchase_id(provider: StripeProvider) -> None:
    obj = checkout_session_completed(purchase_id=None) | {"client_reference_id": "order-abc"}
    event = parse(provider, "checkout.session.completed", obj)
    assert (event.kind, event.purchase_id) == (PaymentEventKind.COMPLETED, None)


def test_expanded_payment_intent_is_read_by_id(provider: StripeProvider) -> None:
    obj = checkout_session_completed() | {"payment_intent": {"id": "pi_x", "object": "x"}}
    assert parse(provider, "checkout.session.completed", obj).payment_reference == "pi_x"


@pytest.mark.parametrize(
    "type", ["payment_intent.succeeded", "customer.created", "checkout.session.new_thing"]
)
def test_other_events_are_ignored(provider: StripeProvider, type: str) -> None:
    event = parse(provider, type, {"id": "obj_1", "object": "thing"}, event_id="evt_o")
    assert (event.kind, event.event_id) == (PaymentEventKind.IGNORED, "evt_o")


def test_redelivery_parses_to_the_same_event(provider: StripeProvider) -> None:
    payload, header = signed_event(
        WEBHOOK_SECRET, "checkout.session.completed", checkout_session_completed()
    )
    assert provider.parse_webhook(payload, header) == provider.parse_webhook(payload, header)


def test_signature_from_another_secret_is_invalid(provider: StripeProvider) -> None:
    payload, header = signed_event(
        "whsec_someone_else", "checkout.session.completed", checkout_session_completed()
    )
    with pytest.raises(WebhookSignatureInvalid) as caught:
        provider.parse_webhook(payload, header)
    assert caught.value.code == "webhook_signature_invalid"
    assert WEBHOOK_SECRET not in str(caught.value)


def test_tampered_payload_is_invalid(provider: StripeProvider) -> None:
    payload, header = signed_event(
        WEBHOOK_SECRET,
        "checkout.session.completed",
        checkout_session_completed(amount_total=499),
    )
    forged = payload.replace(b'"amount_total": 499', b'"amount_total": 99999')
    assert forged != payload
    with pytest.raises(WebhookSignatureInvalid):
        provider.parse_webhook(forged, header)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc,v1=00", "t=1700000000"])
def test_missing_or_malformed_header_is_invalid(
    provider: StripeProvider, header: str | None
) -> None:
    payload, _ = signed_event(WEBHOOK_SECRET, "charge.refunded", charge_refunded())
    with pytest.raises(WebhookSignatureInvalid):
        provider.parse_webhook(payload, header)


def test_stale_timestamp_is_invalid(provider: StripeProvider) -> None:
    payload, header = signed_event(
        WEBHOOK_SECRET,
        "checkout.session.completed",
        checkout_session_completed(),
        timestamp=int(time.time()) - 301,
    )
    with pytest.raises(WebhookSignatureInvalid, match="tolerance"):
        provider.parse_webhook(payload, header)


@pytest.mark.parametrize("ahead_s", [301, 3600])
def test_future_timestamp_is_invalid(provider: StripeProvider, ahead_s: int) -> None:
    """Issue 16 D11: a correctly signed event dated ahead of now by more than the tolerance
    is refused, as one dated behind it is."""
    payload, header = signed_event(
        WEBHOOK_SECRET,
        "checkout.session.completed",
        checkout_session_completed(),
        timestamp=int(time.time()) + ahead_s,
    )
    with pytest.raises(WebhookSignatureInvalid, match="future"):
        provider.parse_webhook(payload, header)


def test_slightly_future_timestamp_within_tolerance_is_accepted(provider: StripeProvider) -> None:
    payload, header = signed_event(
        WEBHOOK_SECRET,
        "checkout.session.completed",
        checkout_session_completed(),
        timestamp=int(time.time()) + 200,
    )
    assert provider.parse_webhook(payload, header).kind is PaymentEventKind.COMPLETED


def test_recent_timestamp_within_tolerance_is_accepted(provider: StripeProvider) -> None:
    payload, header = signed_event(
        WEBHOOK_SECRET,
        "checkout.session.completed",
        checkout_session_completed(),
        timestamp=int(time.time()) - 200,
    )
    assert provider.parse_webhook(payload, header).kind is PaymentEventKind.COMPLETED


def test_missing_webhook_secret_is_not_configured(fake: FakeStripeHTTP) -> None:
    provider = StripeProvider(SECRET_KEY, None, http_client=fake)
    payload, header = signed_event(WEBHOOK_SECRET, "charge.refunded", charge_refunded())
    with pytest.raises(PaymentProviderNotConfigured):
        provider.parse_webhook(payload, header)


def test_zero_tolerance_is_refused() -> None:
    with pytest.raises(InvalidInput):
        StripeProvider(SECRET_KEY, WEBHOOK_SECRET, webhook_tolerance_s=0)


def test_signed_body_that_is_not_an_event_is_invalid_input(provider: StripeProvider) -> None:
    payload = b"not json at all"
    with pytest.raises(InvalidInput):
        provider.parse_webhook(payload, sign(payload, WEBHOOK_SECRET))


def test_non_utf8_body_is_invalid(provider: StripeProvider) -> None:
    with pytest.raises(WebhookSignatureInvalid):
        provider.parse_webhook(b"\xff\xfe", "t=1,v1=00")
