"""Wallets over HTTP (DESIGN §5, §12): packages, manual and Stripe purchases, the Stripe
webhook, grants burn-down and revenue recognition, usage refunds, holds, low-balance alerts and
the CSV statement. Exact µcr everywhere; every refusal is problem+json and leaves the ledger
exactly as it was. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from modelbank import jobs
from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.secrets import SecretBox
from modelbank.webhooks import service as webhooks
from modelbank.webhooks.models import outbox_events_table
from tests.api.conftest import TEST_SECRET_KEY, Api, bearer, problem
from tests.conftest import Db
from tests.wallets.stripe_fixtures import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    FakeStripeHTTP,
    charge_refunded,
    checkout_session_completed,
    disable_stripe_telemetry,
    session_expired,
    signed_event,
)

V1 = "/api/v1"
CR = 1_000_000
"""µcr in one credit."""
RULE = {"share_bps": 2_000, "popularity_tiers": [], "type_multipliers": {"chat": 1}}
"""Creators earn exactly 20% of a chat charge."""


# --------------------------------------------------------------------------- helpers


def wallet(api: Api, user_id: int) -> dict[str, Any]:
    r = api.client.get(f"{V1}/users/{user_id}/wallet", headers=api.admin)
    assert r.status_code == 200, r.text
    return dict(r.json())


def grants_of(api: Api, user_id: int) -> list[dict[str, Any]]:
    r = api.client.get(f"{V1}/users/{user_id}/grants", headers=api.admin)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def package_id(api: Api, slug: str) -> int:
    r = api.client.get(f"{V1}/packages", params={"include_inactive": True}, headers=api.admin)
    return next(int(p["id"]) for p in r.json()["items"] if p["slug"] == slug)


def meter(api: Api, creator: int, slug: str = "meter") -> int:
    """A model charging exactly 1 credit per unit; its creator earns 20% of chat charges."""
    model = api.model(slug, creator_id=creator, price={"per_unit_ucr": CR}, earnings_rule=RULE)
    return int(model["id"])


def spend(api: Api, user_id: int, credits: int, *, key: str, model: str = "meter") -> Any:
    """Charge ``credits`` credits of usage (a chat event of ``credits`` units)."""
    r = api.charge(user_id, model, key=key, units=credits, usage_type="chat")
    assert r.status_code == 201, r.text
    assert r.json()["charge_ucr"] == credits * CR
    return r.json()


def start_purchase(api: Api, user_id: int, headers: dict[str, str], pkg: int, **body: Any) -> Any:
    r = api.client.post(
        f"{V1}/users/{user_id}/purchases", json={"package_id": pkg, **body}, headers=headers
    )
    assert r.status_code == 201, r.text
    return r.json()


def confirm(api: Api, purchase_id: int, key: str) -> Any:
    return api.client.post(
        f"{V1}/admin/purchases/{purchase_id}/confirm",
        headers={**api.admin, "Idempotency-Key": key},
    )


def buy(api: Api, user_id: int, headers: dict[str, str], slug: str, key: str) -> Any:
    """A manual purchase of package ``slug``, confirmed by the admin."""
    started = start_purchase(api, user_id, headers, package_id(api, slug), provider="manual")
    r = confirm(api, started["id"], key)
    assert r.status_code == 200, r.text
    return r.json()


def idem(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


# --------------------------------------------------------------------------- packages


def test_packages_list_the_four_defaults_with_price_per_credit(api: Api) -> None:
    _, user = api.user("alice")
    r = api.client.get(f"{V1}/packages", headers=user)
    assert r.status_code == 200, r.text
    got = [
        (
            p["slug"],
            p["name"],
            p["credits_ucr"],
            p["credits"],
            p["price_uusd"],
            p["price"],
            p["currency"],
            p["price_per_credit_uusd"],
            p["price_per_credit"],
            p["highlighted"],
            p["is_active"],
        )
        for p in r.json()["items"]
    ]
    assert got == [
        ("starter", "Starter", 50 * CR, "50.000000 cr", 4_990_000, "$4.99", "usd", 99_800,
         "$0.0998", False, True),
        ("popular", "Popular", 200 * CR, "200.000000 cr", 17_990_000, "$17.99", "usd", 89_950,
         "$0.0900", True, True),
        ("pro", "Pro", 500 * CR, "500.000000 cr", 39_990_000, "$39.99", "usd", 79_980,
         "$0.0800", False, True),
        ("enterprise", "Enterprise", 2_000 * CR, "2,000.000000 cr", 139_990_000, "$139.99",
         "usd", 69_995, "$0.0700", False, True),
    ]  # fmt: skip
    # a service key sees the same; no key is 401
    assert api.client.get(f"{V1}/packages", headers=api.service).json() == r.json()
    problem(api.client.get(f"{V1}/packages"), 401, "unauthenticated")
    # only admins may ask for inactive packages too
    problem(
        api.client.get(f"{V1}/packages", params={"include_inactive": True}, headers=user),
        403,
        "forbidden",
    )


def test_admin_creates_and_patches_packages(api: Api) -> None:
    user_id, user = api.user("alice")
    body = {"slug": "mini", "name": "Mini", "credits_ucr": 10 * CR, "price_uusd": 990_000}
    r = api.client.post(f"{V1}/admin/packages", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    mini = r.json()
    assert mini["slug"] == "mini" and mini["credits_ucr"] == 10 * CR
    assert mini["price"] == "$0.99" and mini["price_per_credit_uusd"] == 99_000
    assert mini["is_active"] is True and mini["highlighted"] is False

    # a price that is not whole cents: 422 problem+json, nothing written
    before = api.client.get(f"{V1}/packages", headers=api.admin).json()
    problem(
        api.client.post(
            f"{V1}/admin/packages",
            json={**body, "slug": "odd", "price_uusd": 990_001},
            headers=api.admin,
        ),
        422,
        "invalid_input",
    )
    problem(
        api.client.patch(
            f"{V1}/admin/packages/{mini['id']}", json={"price_uusd": 1_234_567}, headers=api.admin
        ),
        422,
        "invalid_input",
    )
    problem(
        api.client.post(f"{V1}/admin/packages", json={**body, "slug": "x2"}, headers=user),
        403,
        "forbidden",
    )
    problem(
        api.client.post(f"{V1}/admin/packages", json=body, headers=api.admin),
        422,
        "invalid_input",
    )  # the slug is taken
    problem(
        api.client.patch(f"{V1}/admin/packages/999999", json={"name": "x"}, headers=api.admin),
        404,
        "package_not_found",
    )
    assert api.client.get(f"{V1}/packages", headers=api.admin).json() == before

    r = api.client.patch(
        f"{V1}/admin/packages/{mini['id']}",
        json={"price_uusd": 1_500_000, "highlighted": True},
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["price"] == "$1.50" and r.json()["highlighted"] is True

    # inactive: hidden from GET, shown to admins on request, not for sale
    r = api.client.patch(
        f"{V1}/admin/packages/{mini['id']}", json={"is_active": False}, headers=api.admin
    )
    assert r.status_code == 200 and r.json()["is_active"] is False
    listed = api.client.get(f"{V1}/packages", headers=user).json()["items"]
    assert "mini" not in [p["slug"] for p in listed] and len(listed) == 4
    everything = api.client.get(
        f"{V1}/packages", params={"include_inactive": True}, headers=api.admin
    ).json()["items"]
    assert [p["is_active"] for p in everything if p["slug"] == "mini"] == [False]
    api.rejects(
        "POST",
        f"{V1}/users/{user_id}/purchases",
        422,
        "invalid_input",
        json={"package_id": mini["id"]},
        headers=user,
    )


# --------------------------------------------------------------------------- manual purchase


def test_manual_purchase_end_to_end(api: Api) -> None:
    user_id, user = api.user("alice")
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    popular = package_id(api, "popular")

    before = api.ledger_state()
    started = start_purchase(api, user_id, user, popular)
    assert started["provider"] == "manual" and started["status"] == "pending"
    assert started["credits_ucr"] == 200 * CR and started["price_uusd"] == 17_990_000
    assert started["checkout_url"] is None and started["grant_id"] is None
    assert started["external_id"] == f"manual_{started['id']}"
    assert api.ledger_state() == before, "starting a purchase granted something"
    assert wallet(api, user_id)["balance_ucr"] == 0
    got = api.client.get(f"{V1}/purchases/{started['id']}", headers=user)
    assert got.status_code == 200 and got.json() == started

    # the buyer cannot confirm their own payment
    api.rejects(
        "POST",
        f"{V1}/admin/purchases/{started['id']}/confirm",
        403,
        "forbidden",
        headers=idem(user, "c1"),
    )
    problem(
        api.client.post(f"{V1}/admin/purchases/{started['id']}/confirm", headers=api.admin),
        422,
        "validation_error",
    )  # no Idempotency-Key

    r = confirm(api, started["id"], "confirm-1")
    assert r.status_code == 200, r.text
    assert r.headers["idempotency-hit"] == "false"
    done = r.json()
    assert done["status"] == "completed" and done["grant_id"] is not None
    assert done["completed_at"] is not None
    assert wallet(api, user_id)["balance_ucr"] == 200 * CR
    (grant,) = grants_of(api, user_id)
    assert grant["source"] == "purchased" and grant["cost_basis_uusd"] == 17_990_000
    assert grant["amount_ucr"] == grant["remaining_ucr"] == 200 * CR
    assert grant["purchase_id"] == started["id"] and grant["id"] == done["grant_id"]

    # confirmed again: the same key replays, another key finds it completed; credits once
    after = api.ledger_state()
    again = confirm(api, started["id"], "confirm-1")
    assert again.status_code == 200 and again.headers["idempotency-hit"] == "true"
    assert again.json() == done
    other = confirm(api, started["id"], "confirm-2")
    assert other.status_code == 200 and other.headers["idempotency-hit"] == "false"
    assert other.json() == done
    assert api.ledger_state() == after
    assert wallet(api, user_id)["balance_ucr"] == 200 * CR

    listed = api.client.get(f"{V1}/users/{user_id}/purchases", headers=user).json()
    assert [p["status"] for p in listed["items"]] == ["completed"]
    pending = api.client.get(
        f"{V1}/admin/purchases", params={"status": "pending"}, headers=api.admin
    ).json()
    assert pending["items"] == []

    # the user spends 30 credits, then the admin refunds the purchase: only the unspent 170
    spend(api, user_id, 30, key="u1")
    refund_url = f"{V1}/purchases/{started['id']}/refund"
    api.rejects("POST", refund_url, 403, "forbidden", json={}, headers=idem(user, "r0"))
    api.rejects(
        "POST",
        refund_url,
        422,
        "invalid_input",
        json={"amount_ucr": 170 * CR + 1},
        headers=idem(api.admin, "r-too-much"),
    )
    r = api.client.post(refund_url, json={"amount_ucr": 50 * CR}, headers=idem(api.admin, "r1"))
    assert r.status_code == 200, r.text
    assert r.json()["reversed_ucr"] == 50 * CR and r.json()["reversed"] == "50.000000 cr"
    part = r.json()["purchase"]
    assert part["status"] == "completed" and part["refunded_ucr"] == 50 * CR
    # 50 of 200 credits bought for $17.99 carried $4.4975
    assert part["refunded_uusd"] == 4_497_500
    r = api.client.post(refund_url, headers=idem(api.admin, "r2"))
    assert r.status_code == 200, r.text
    assert r.json()["reversed_ucr"] == 120 * CR
    final = r.json()["purchase"]
    assert final["status"] == "refunded" and final["refunded_ucr"] == 170 * CR
    # 170 of 200 credits: the whole basis but the 30 spent ($2.6985)
    assert final["refunded_uusd"] == 17_990_000 - 2_698_500
    w = wallet(api, user_id)
    assert w["balance_ucr"] == w["available_ucr"] == 0
    (grant,) = grants_of(api, user_id)
    assert grant["remaining_ucr"] == 0
    # nothing left: another refund reverses nothing; a confirmation changes nothing
    state = api.ledger_state()
    r = api.client.post(refund_url, headers=idem(api.admin, "r3"))
    assert r.status_code == 200 and r.json()["reversed_ucr"] == 0
    assert confirm(api, started["id"], "confirm-3").json()["status"] == "refunded"
    assert api.ledger_state() == state


def test_refund_of_a_pending_purchase_is_409(api: Api) -> None:
    user_id, user = api.user("alice")
    started = start_purchase(api, user_id, user, package_id(api, "starter"))
    api.rejects(
        "POST",
        f"{V1}/purchases/{started['id']}/refund",
        409,
        "purchase_state_conflict",
        headers=idem(api.admin, "r"),
    )


def test_foreign_and_missing_purchases_and_holds_look_alike(api: Api) -> None:
    a, a_headers = api.user("alice", credits_ucr=10 * CR)
    _, b_headers = api.user("bob")
    bought = start_purchase(api, a, a_headers, package_id(api, "starter"))
    held = api.client.post(
        f"{V1}/users/{a}/holds",
        json={"amount_ucr": CR, "timeout_s": 60},
        headers=idem(a_headers, "h"),
    ).json()
    for kind, own, missing in (
        ("purchases", bought["id"], 999_999),
        ("holds", held["id"], 999_999),
    ):
        foreign = api.client.get(f"{V1}/{kind}/{own}", headers=b_headers)
        absent = api.client.get(f"{V1}/{kind}/{missing}", headers=b_headers)
        code = f"{kind[:-1]}_not_found"
        assert problem(foreign, 404, code).keys() == problem(absent, 404, code).keys()
        assert foreign.json()["detail"] == f"no {kind[:-1]} {own}"


# --------------------------------------------------------------------------- Stripe


@pytest.fixture
def stripe_api(db: Db, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, FakeStripeHTTP]]:
    """The app with Stripe configured (test keys) and its API calls answered by a fake."""
    disable_stripe_telemetry(monkeypatch)
    settings = load_settings(
        database_url=db.url,
        stripe_secret_key=SECRET_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        secret_key=TEST_SECRET_KEY,
    )
    app = create_app(settings, engine=db.engine)
    fake = FakeStripeHTTP()
    app.state.db.payment_http_client = fake
    with db.tx() as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="test admin").secret
        service = auth.create_key(session, auth.Role.SERVICE, name="test service").secret
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client, db, bearer(admin), bearer(service)), fake


def deliver(api: Api, type_: str, obj: dict[str, Any], event_id: str) -> Any:
    body, signature = signed_event(WEBHOOK_SECRET, type_, obj, event_id=event_id)
    return api.client.post(
        f"{V1}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


def stripe_purchase(api: Api, user_id: int, headers: dict[str, str]) -> dict[str, Any]:
    return dict(start_purchase(api, user_id, headers, package_id(api, "popular")))


def completed(p: dict[str, Any], intent: str = "pi_1") -> dict[str, Any]:
    return checkout_session_completed(
        session_id=p["external_id"],
        purchase_id=p["id"],
        user_id=p["user_id"],
        credits_ucr=p["credits_ucr"],
        amount_total=1799,
        payment_intent=intent,
    )


def refunded(p: dict[str, Any], cents: int, intent: str = "pi_1") -> dict[str, Any]:
    return charge_refunded(
        payment_intent=intent,
        amount=1799,
        amount_refunded=cents,
        purchase_id=p["id"],
        user_id=p["user_id"],
        credits_ucr=p["credits_ucr"],
    )


def test_stripe_purchase_checkout_then_signed_webhook_grants_once(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, fake = stripe_api
    user_id, user = api.user("alice")
    before = api.ledger_state()
    p = stripe_purchase(api, user_id, user)
    assert p["provider"] == "stripe" and p["status"] == "pending"
    assert p["external_id"] == "cs_test_1"
    assert p["checkout_url"] == "https://checkout.stripe.com/c/pay/cs_test_1"
    assert api.ledger_state() == before and wallet(api, user_id)["balance_ucr"] == 0
    (sent,) = fake.requests
    assert sent.method == "post" and sent.url.endswith("/v1/checkout/sessions")
    assert sent.form["line_items[0][price_data][unit_amount]"] == "1799"
    assert sent.form["line_items[0][price_data][currency]"] == "usd"
    assert sent.form["line_items[0][price_data][product_data][name]"] == "Popular"
    assert sent.form["mode"] == "payment"
    assert sent.form["client_reference_id"] == str(p["id"])
    assert sent.form["metadata[purchase_id]"] == str(p["id"])
    assert sent.form["metadata[user_id]"] == str(user_id)
    assert sent.form["metadata[credits_ucr]"] == str(200 * CR)
    assert sent.form["payment_intent_data[metadata][purchase_id]"] == str(p["id"])
    assert sent.headers["Idempotency-Key"] == f"modelbank-purchase-{p['id']}"
    assert sent.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.form["success_url"].endswith("session_id={CHECKOUT_SESSION_ID}")

    r = deliver(api, "checkout.session.completed", completed(p), "evt_done")
    assert r.status_code == 200, r.text
    assert r.json() == {"result": "completed"}
    assert wallet(api, user_id)["balance_ucr"] == 200 * CR
    (grant,) = grants_of(api, user_id)
    assert grant["source"] == "purchased" and grant["cost_basis_uusd"] == 17_990_000
    assert grant["purchase_id"] == p["id"]
    got = api.client.get(f"{V1}/purchases/{p['id']}", headers=user).json()
    assert got["status"] == "completed" and got["grant_id"] == grant["id"]

    # Stripe delivers at least once: the same event again, then another completion event
    state = api.ledger_state()
    again = deliver(api, "checkout.session.completed", completed(p), "evt_done")
    assert again.status_code == 200 and again.json() == {"result": "duplicate"}
    other = deliver(api, "checkout.session.async_payment_succeeded", completed(p), "evt_2")
    assert other.json() == {"result": "already_completed"}
    # an expiry that arrives after the completion does not undo it
    late = deliver(
        api,
        "checkout.session.expired",
        session_expired(session_id="cs_test_1", purchase_id=p["id"]),
        "evt_late",
    )
    assert late.status_code == 200, late.text
    assert api.client.get(f"{V1}/purchases/{p['id']}", headers=user).json()["status"] == (
        "completed"
    )
    assert api.ledger_state() == state
    assert len(grants_of(api, user_id)) == 1
    # an admin cannot confirm a Stripe purchase by hand
    api.rejects(
        "POST",
        f"{V1}/admin/purchases/{p['id']}/confirm",
        409,
        "purchase_state_conflict",
        headers=idem(api.admin, "manual"),
    )


def test_stripe_forged_signature_is_400_and_changes_nothing(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, _ = stripe_api
    user_id, user = api.user("alice")
    p = stripe_purchase(api, user_id, user)
    body, good = signed_event(WEBHOOK_SECRET, "checkout.session.completed", completed(p))
    _, wrong_secret = signed_event("whsec_not_the_one", "checkout.session.completed", completed(p))
    stale = signed_event(
        WEBHOOK_SECRET, "checkout.session.completed", completed(p), timestamp=1_000_000
    )
    tampered = body.replace(b'"amount_total": 1799', b'"amount_total": 1')
    assert tampered != body
    cases = [
        (body, {"Stripe-Signature": wrong_secret}),
        (body, {"Stripe-Signature": "t=1,v1=deadbeef"}),
        (body, {}),
        (tampered, {"Stripe-Signature": good}),
        (stale[0], {"Stripe-Signature": stale[1]}),
    ]
    for payload, headers in cases:
        api.rejects(
            "POST",
            f"{V1}/webhooks/stripe",
            400,
            "webhook_signature_invalid",
            content=payload,
            headers={**headers, "Content-Type": "application/json"},
        )
    # the genuine delivery, afterwards, is not taken for a duplicate
    r = api.client.post(f"{V1}/webhooks/stripe", content=body, headers={"Stripe-Signature": good})
    assert r.json() == {"result": "completed"}
    assert wallet(api, user_id)["balance_ucr"] == 200 * CR


def test_stripe_webhook_without_configuration_is_422(api: Api) -> None:
    body, signature = signed_event(
        WEBHOOK_SECRET,
        "checkout.session.completed",
        completed({"external_id": "cs_1", "id": 1, "user_id": 1, "credits_ucr": 1}),
    )
    api.rejects(
        "POST",
        f"{V1}/webhooks/stripe",
        422,
        "payment_provider_not_configured",
        content=body,
        headers={"Stripe-Signature": signature},
    )
    user_id, user = api.user("alice")
    api.rejects(
        "POST",
        f"{V1}/users/{user_id}/purchases",
        422,
        "payment_provider_not_configured",
        json={"package_id": package_id(api, "starter"), "provider": "stripe"},
        headers=user,
    )


def test_stripe_expired_checkout(stripe_api: tuple[Api, FakeStripeHTTP]) -> None:
    api, _ = stripe_api
    user_id, user = api.user("alice")
    p = stripe_purchase(api, user_id, user)
    before = api.ledger_state()
    r = deliver(
        api,
        "checkout.session.expired",
        session_expired(session_id=p["external_id"], purchase_id=p["id"], user_id=user_id),
        "evt_exp",
    )
    assert r.status_code == 200 and r.json() == {"result": "expired"}
    got = api.client.get(f"{V1}/purchases/{p['id']}", headers=user).json()
    assert got["status"] == "expired" and got["grant_id"] is None
    assert api.ledger_state() == before
    expired = api.client.get(
        f"{V1}/admin/purchases", params={"status": "expired"}, headers=api.admin
    ).json()
    assert [x["id"] for x in expired["items"]] == [p["id"]]


def test_stripe_completion_after_expiry_still_grants(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, _ = stripe_api
    user_id, user = api.user("alice")
    p = stripe_purchase(api, user_id, user)
    expired = session_expired(session_id=p["external_id"], purchase_id=p["id"], user_id=user_id)
    assert deliver(api, "checkout.session.expired", expired, "evt_exp").json() == {
        "result": "expired"
    }
    # the payment arrived after all (delivered late): the money is in, so are the credits
    r = deliver(api, "checkout.session.completed", completed(p), "evt_done")
    assert r.json() == {"result": "completed"}
    got = api.client.get(f"{V1}/purchases/{p['id']}", headers=user).json()
    assert got["status"] == "completed"
    assert wallet(api, user_id)["balance_ucr"] == 200 * CR


def test_stripe_checkout_failure_is_502_and_nothing_is_granted(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, fake = stripe_api
    user_id, user = api.user("alice")
    fake.fail_next(400, message="No such price", code="resource_missing")
    body = api.rejects(
        "POST",
        f"{V1}/users/{user_id}/purchases",
        502,
        "payment_provider_error",
        json={"package_id": package_id(api, "starter")},
        headers=user,
    )
    assert SECRET_KEY not in str(body)
    (failed,) = api.client.get(f"{V1}/users/{user_id}/purchases", headers=user).json()["items"]
    assert failed["status"] == "failed" and failed["checkout_url"] is None
    assert wallet(api, user_id)["balance_ucr"] == 0


def test_stripe_refund_before_completion_ends_refunded(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, _ = stripe_api
    user_id, user = api.user("alice")
    p = stripe_purchase(api, user_id, user)
    # charge.refunded (full) is delivered before checkout.session.completed
    r = deliver(api, "charge.refunded", refunded(p, 1799), "evt_refund")
    assert r.status_code == 200 and r.json() == {"result": "refunded"}
    got = api.client.get(f"{V1}/purchases/{p['id']}", headers=user).json()
    assert got["status"] == "refunded" and got["refunded_ucr"] == 200 * CR
    assert got["refunded_uusd"] == 17_990_000
    w = wallet(api, user_id)
    assert w["balance_ucr"] == 0
    state = api.ledger_state()
    late = deliver(api, "checkout.session.completed", completed(p), "evt_done")
    assert late.json() == {"result": "already_completed"}
    assert api.ledger_state() == state
    (grant,) = grants_of(api, user_id)
    assert grant["amount_ucr"] == 200 * CR and grant["remaining_ucr"] == 0


def test_stripe_completion_paying_another_amount_or_currency_grants_nothing(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    """A correctly signed completion whose ``amount_total`` or ``currency`` is not what the
    purchase recorded (17.99 USD for Popular) grants nothing: the purchase fails with reason
    ``amount_mismatch`` (audited, a webhook event), ledger unchanged; a refund of that
    payment then takes nothing back and grants nothing either."""
    api, _ = stripe_api
    user_id, user = api.user("alice")
    before = api.ledger_state()
    cheap, other_currency = stripe_purchase(api, user_id, user), stripe_purchase(api, user_id, user)
    r = deliver(api, "checkout.session.completed", completed(cheap) | {"amount_total": 1}, "evt_1")
    assert r.status_code == 200 and r.json() == {"result": "amount_mismatch"}
    euros = completed(other_currency, intent="pi_2") | {"currency": "eur"}
    r = deliver(api, "checkout.session.completed", euros, "evt_2")
    assert r.status_code == 200 and r.json() == {"result": "amount_mismatch"}
    for p in (cheap, other_currency):
        got = api.client.get(f"{V1}/purchases/{p['id']}", headers=user).json()
        assert got["status"] == "failed" and got["grant_id"] is None
    assert api.ledger_state() == before
    assert wallet(api, user_id)["balance_ucr"] == 0 and grants_of(api, user_id) == []
    r = api.client.get(
        f"{V1}/admin/audit", params={"action": "purchase.amount_mismatch"}, headers=api.admin
    )
    flagged = {int(x["target_id"]): x["after"] for x in r.json()["items"]}
    assert flagged[cheap["id"]]["reason"] == "amount_mismatch"
    assert (flagged[cheap["id"]]["paid_cents"], flagged[cheap["id"]]["expected_cents"]) == (1, 1799)
    assert flagged[other_currency["id"]]["paid_currency"] == "eur"
    # Redelivered: a duplicate. Refunded by the operator: nothing granted, nothing taken.
    again = deliver(
        api, "checkout.session.completed", completed(cheap) | {"amount_total": 1}, "evt_1"
    )
    assert again.json() == {"result": "duplicate"}
    back = refunded(cheap, 1) | {"amount": 1}
    assert deliver(api, "charge.refunded", back, "evt_3").json() == {"result": "amount_mismatch"}
    assert api.ledger_state() == before
    got = api.client.get(f"{V1}/purchases/{cheap['id']}", headers=user).json()
    assert got["status"] == "failed" and got["refunded_ucr"] == 0
    # The matching completion of a purchase still grants.
    right = stripe_purchase(api, user_id, user)
    r = deliver(api, "checkout.session.completed", completed(right, intent="pi_9"), "evt_9")
    assert r.json() == {"result": "completed"}
    assert wallet(api, user_id)["balance_ucr"] == 200 * CR


def test_stripe_underpaid_payment_refunded_before_its_completion_grants_nothing(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    """Events out of order: the refund of a 1-cent payment (the charge's ``amount`` is 1, not
    the 1799 of Popular) arrives before the completion. Nothing may be granted, as when the
    completion arrives first (amount_mismatch)."""
    api, _ = stripe_api
    user_id, user = api.user("alice")
    before = api.ledger_state()
    p = stripe_purchase(api, user_id, user)
    back = refunded(p, 1) | {"amount": 1}
    deliver(api, "charge.refunded", back, "evt_refund")
    late = completed(p) | {"amount_total": 1}
    deliver(api, "checkout.session.completed", late, "evt_done")
    assert wallet(api, user_id)["balance_ucr"] == 0
    assert api.ledger_state() == before


def test_stripe_partial_refunds_reverse_unspent_credits_in_proportion(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, _ = stripe_api
    user_id, user = api.user("alice")
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    p = stripe_purchase(api, user_id, user)
    assert deliver(api, "checkout.session.completed", completed(p), "evt_done").status_code == 200
    spend(api, user_id, 50, key="u1")

    # $9.00 of $17.99 refunded: 200 cr × 900 / 1799 = 100.055586 cr reversed
    first = 200 * CR * 900 // 1799
    assert first == 100_055_586
    r = deliver(api, "charge.refunded", refunded(p, 900), "evt_r1")
    assert r.status_code == 200 and r.json() == {"result": "refunded"}
    got = api.client.get(f"{V1}/purchases/{p['id']}", headers=user).json()
    assert got["status"] == "completed" and got["refunded_ucr"] == first
    assert wallet(api, user_id)["balance_ucr"] == 150 * CR - first
    # the same event again: nothing more
    state = api.ledger_state()
    assert deliver(api, "charge.refunded", refunded(p, 900), "evt_r1").json() == {
        "result": "duplicate"
    }
    assert api.ledger_state() == state

    # then the rest ($17.99 in total): only what is still unspent can go back. This charge
    # carries no metadata: the purchase is found by its PaymentIntent.
    rest = {**refunded(p, 1799), "metadata": {}}
    r = deliver(api, "charge.refunded", rest, "evt_r2")
    assert r.json() == {"result": "refunded"}
    got = api.client.get(f"{V1}/purchases/{p['id']}", headers=user).json()
    assert got["status"] == "refunded" and got["refunded_ucr"] == 150 * CR
    # the 50 credits spent keep their basis: 50/200 of $17.99
    assert got["refunded_uusd"] == 17_990_000 - 4_497_500
    assert wallet(api, user_id)["balance_ucr"] == 0
    (grant,) = grants_of(api, user_id)
    assert grant["remaining_ucr"] == 0


# --------------------------------------------------------------------------- grants


def test_bonus_burns_before_purchased_and_revenue_is_recognised_on_purchased(api: Api) -> None:
    user_id, user = api.user("alice")
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    r = api.client.post(
        f"{V1}/admin/packages",
        json={"slug": "twenty", "name": "Twenty", "credits_ucr": 20 * CR, "price_uusd": 1_800_000},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    buy(api, user_id, user, "twenty", "c1")
    api.grant(user_id, 10 * CR, key="bonus", source="bonus")
    assert wallet(api, user_id)["balance_ucr"] == 30 * CR

    spend(api, user_id, 15, key="u1")

    by_source = {g["source"]: g for g in grants_of(api, user_id)}
    assert by_source["bonus"]["amount_ucr"] == 10 * CR
    assert by_source["bonus"]["remaining_ucr"] == 0 and by_source["bonus"]["cost_basis_uusd"] == 0
    assert by_source["purchased"]["amount_ucr"] == 20 * CR
    assert by_source["purchased"]["remaining_ucr"] == 15 * CR
    assert by_source["purchased"]["remaining"] == "15.000000 cr"
    assert by_source["purchased"]["cost_basis_uusd"] == 1_800_000
    assert by_source["bonus"]["priority"] < by_source["purchased"]["priority"]
    mine = api.client.get(f"{V1}/users/{user_id}/grants", headers=user)
    assert mine.status_code == 200 and mine.json()["items"] == grants_of(api, user_id)
    opened = api.client.get(f"{V1}/users/{user_id}/grants", params={"open": True}, headers=user)
    assert [g["source"] for g in opened.json()["items"]] == ["purchased"]

    stats = api.client.get(f"{V1}/admin/stats", headers=api.admin)
    assert stats.status_code == 200, stats.text
    assert stats.json()["revenue_recognition"] == {
        "purchased_ucr": 5 * CR,
        "purchased": "5.000000 cr",
        "purchased_basis_uusd": 450_000,  # 5 of 20 credits bought for $1.80
        "purchased_basis": "$0.45",
        "bonus_ucr": 10 * CR,
        "bonus": "10.000000 cr",
        "by_source_ucr": {"bonus": 10 * CR, "purchased": 5 * CR},
    }


# --------------------------------------------------------------------------- usage refunds


def test_usage_refund_full_and_partial_reverses_creator_earnings(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    charged = spend(api, user_id, 10, key="u1")
    usage_id = charged["usage_id"]
    assert charged["earnings"] == [{"user_id": creator, "amount_ucr": 2 * CR}]
    assert wallet(api, user_id)["balance_ucr"] == 90 * CR
    assert wallet(api, creator)["earnings_ucr"] == 2 * CR
    url = f"{V1}/usage/{usage_id}/refund"

    api.rejects("POST", url, 403, "forbidden", json={}, headers=idem(user, "x"))
    api.rejects("POST", url, 403, "forbidden", json={}, headers=idem(api.service, "x"))
    api.rejects(
        "POST", f"{V1}/usage/999999/refund", 404, "usage_not_found", headers=idem(api.admin, "y")
    )

    r = api.client.post(
        url, json={"amount_ucr": 4 * CR, "reason": "bad answer"}, headers=idem(api.admin, "rf1")
    )
    assert r.status_code == 201, r.text
    part = r.json()
    assert part["usage_id"] == usage_id and part["user_id"] == user_id
    assert part["amount_ucr"] == 4 * CR and part["amount"] == "4.000000 cr"
    assert part["refunded_total_ucr"] == 4 * CR and part["charge_ucr"] == 10 * CR
    assert part["earnings_reversed_ucr"] == 800_000 and part["earnings_owed_ucr"] == 0
    assert part["reason"] == "bad answer"
    assert wallet(api, user_id)["balance_ucr"] == 94 * CR
    assert wallet(api, creator)["earnings_ucr"] == 1_200_000

    # the same key and body replays; the same key with another body is 409
    state = api.ledger_state()
    replay = api.client.post(
        url, json={"amount_ucr": 4 * CR, "reason": "bad answer"}, headers=idem(api.admin, "rf1")
    )
    assert replay.status_code == 201 and replay.json() == part
    assert replay.headers["idempotency-hit"] == "true"
    problem(
        api.client.post(url, json={"amount_ucr": CR}, headers=idem(api.admin, "rf1")),
        409,
        "idempotency_key_reused",
    )
    assert api.ledger_state() == state

    # the rest (no amount: all that is left)
    r = api.client.post(url, headers=idem(api.admin, "rf2"))
    assert r.status_code == 201, r.text
    rest = r.json()
    assert rest["amount_ucr"] == 6 * CR and rest["refunded_total_ucr"] == 10 * CR
    assert rest["earnings_reversed_ucr"] == 1_200_000
    assert wallet(api, user_id)["balance_ucr"] == 100 * CR
    assert wallet(api, creator)["earnings_ucr"] == 0
    (grant,) = grants_of(api, user_id)
    assert grant["remaining_ucr"] == 100 * CR  # the credits went back to the grant they left

    body = api.rejects(
        "POST",
        url,
        409,
        "refund_exceeds_charge",
        json={"amount_ucr": 1},
        headers=idem(api.admin, "rf3"),
    )
    assert body["refundable_ucr"] == 0
    api.rejects(
        "POST",
        url,
        422,
        "validation_error",
        json={"amount_ucr": 0},
        headers=idem(api.admin, "rf4"),
    )
    stats = api.client.get(f"{V1}/admin/stats", headers=api.admin).json()
    assert stats["usage_refunded_ucr"] == 10 * CR
    assert stats["revenue_recognition"]["purchased_ucr"] == 0  # net of the refunds


def test_usage_refund_beyond_a_partial_is_409(api: Api) -> None:
    user_id, _ = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    usage_id = spend(api, user_id, 10, key="u1")["usage_id"]
    url = f"{V1}/usage/{usage_id}/refund"
    r = api.client.post(url, json={"amount_ucr": 7 * CR}, headers=idem(api.admin, "a"))
    assert r.status_code == 201, r.text
    body = api.rejects(
        "POST",
        url,
        409,
        "refund_exceeds_charge",
        json={"amount_ucr": 3 * CR + 1},
        headers=idem(api.admin, "b"),
    )
    assert body["refundable_ucr"] == 3 * CR


# --------------------------------------------------------------------------- holds


def place(
    api: Api, user_id: int, headers: dict[str, str], amount: int, key: str, **body: Any
) -> Any:
    return api.client.post(
        f"{V1}/users/{user_id}/holds",
        json={"amount_ucr": amount, "timeout_s": 600, "model": "meter", **body},
        headers=idem(headers, key),
    )


def test_hold_capture_void_and_conflicts(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)

    r = place(api, user_id, user, 30 * CR, "h1")
    assert r.status_code == 201, r.text
    hold = r.json()
    assert hold["status"] == "pending" and hold["amount_ucr"] == 30 * CR
    assert hold["user_id"] == user_id and hold["captured_ucr"] == 0 and hold["usage_id"] is None
    assert hold["expires_at"] is not None
    w = wallet(api, user_id)
    assert (w["balance_ucr"], w["pending_ucr"], w["available_ucr"]) == (100 * CR, 30 * CR, 70 * CR)
    replay = place(api, user_id, user, 30 * CR, "h1")
    assert replay.status_code == 201 and replay.json() == hold
    assert replay.headers["idempotency-hit"] == "true"
    api.rejects(
        "POST",
        f"{V1}/users/{user_id}/holds",
        402,
        "insufficient_funds",
        json={"amount_ucr": 70 * CR + 1, "timeout_s": 60},
        headers=idem(user, "too-much"),
    )
    listed = api.client.get(f"{V1}/users/{user_id}/holds", headers=user).json()
    assert [h["id"] for h in listed["items"]] == [hold["id"]]

    # capture 12 of the 30: exactly 12 charged through the pipeline, the rest released
    cap = f"{V1}/holds/{hold['id']}/capture"
    api.rejects(
        "POST",
        cap,
        409,
        "hold_amount_exceeded",
        json={"amount_ucr": 30 * CR + 1},
        headers=idem(user, "c0"),
    )
    r = api.client.post(
        cap,
        json={"amount_ucr": 12 * CR, "usage_type": "chat", "units": 12},
        headers=idem(user, "c1"),
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["charge_ucr"] == 12 * CR and out["charge"] == "12.000000 cr"
    assert out["earnings_ucr"] == 2_400_000 and out["usage_id"] is not None
    assert out["hold"]["status"] == "posted" and out["hold"]["captured_ucr"] == 12 * CR
    assert out["hold"]["usage_id"] == out["usage_id"]
    w = wallet(api, user_id)
    assert (w["balance_ucr"], w["pending_ucr"], w["available_ucr"]) == (88 * CR, 0, 88 * CR)
    assert wallet(api, creator)["earnings_ucr"] == 2_400_000
    (grant,) = grants_of(api, user_id)
    assert grant["remaining_ucr"] == 88 * CR
    # the capture is an ordinary usage charge: it can be refunded
    assert (
        api.client.post(
            f"{V1}/usage/{out['usage_id']}/refund",
            json={"amount_ucr": CR},
            headers=idem(api.admin, "rf"),
        ).status_code
        == 201
    )

    api.rejects(
        "POST", cap, 409, "hold_not_pending", json={"amount_ucr": CR}, headers=idem(user, "c2")
    )
    api.rejects(
        "POST", f"{V1}/holds/{hold['id']}/void", 409, "hold_not_pending", headers=idem(user, "v0")
    )

    # void: everything released
    second = place(api, user_id, user, 20 * CR, "h2").json()
    assert wallet(api, user_id)["available_ucr"] == 69 * CR
    r = api.client.post(f"{V1}/holds/{second['id']}/void", headers=idem(user, "v1"))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "voided" and r.json()["reason"] == "voided"
    assert r.json()["captured_ucr"] == 0
    w = wallet(api, user_id)
    assert (w["balance_ucr"], w["pending_ucr"], w["available_ucr"]) == (89 * CR, 0, 89 * CR)
    api.rejects(
        "POST",
        f"{V1}/holds/{second['id']}/capture",
        409,
        "hold_not_pending",
        json={"amount_ucr": CR},
        headers=idem(user, "c3"),
    )
    statuses = api.client.get(
        f"{V1}/users/{user_id}/holds", params={"status": "voided"}, headers=user
    ).json()["items"]
    assert [h["id"] for h in statuses] == [second["id"]]


def test_hold_expires_through_the_jobs(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    r = place(api, user_id, user, 40 * CR, "h1", timeout_s=60)
    assert r.status_code == 201, r.text
    hold = r.json()
    assert wallet(api, user_id)["available_ucr"] == 60 * CR

    # before its expiry the jobs leave it alone
    early = jobs.run_once(
        api.db.factory, box=SecretBox(TEST_SECRET_KEY), deliver=False, now=datetime.now(UTC)
    )
    assert early.holds_expired == 0
    report = jobs.run_once(
        api.db.factory,
        box=SecretBox(TEST_SECRET_KEY),
        deliver=False,
        now=datetime.now(UTC) + timedelta(seconds=120),
    )
    assert report.holds_expired == 1
    got = api.client.get(f"{V1}/holds/{hold['id']}", headers=user).json()
    assert got["status"] == "voided" and got["reason"] == "expired"
    assert got["resolved_at"] is not None
    w = wallet(api, user_id)
    assert (w["balance_ucr"], w["pending_ucr"], w["available_ucr"]) == (100 * CR, 0, 100 * CR)
    api.rejects(
        "POST",
        f"{V1}/holds/{hold['id']}/capture",
        409,
        json={"amount_ucr": CR},
        headers=idem(user, "late"),
    )
    # idempotent: a second run finds nothing to do
    again = jobs.run_once(
        api.db.factory,
        box=SecretBox(TEST_SECRET_KEY),
        deliver=False,
        now=datetime.now(UTC) + timedelta(seconds=180),
    )
    assert again.holds_expired == 0


# --------------------------------------------------------------------------- low balance


def low_balance_events(api: Api, endpoint_id: int, user_id: int) -> list[dict[str, Any]]:
    """The payloads of the ``wallet.low_balance`` deliveries queued for the endpoint about
    ``user_id``, oldest first."""
    with api.db.tx() as session:
        found = webhooks.list_deliveries(session, endpoint_id=endpoint_id)
        payloads = {
            int(row.id): row.payload
            for row in session.execute(
                select(outbox_events_table.c.id, outbox_events_table.c.payload)
            )
        }
    assert {d.event_type for d in found} <= {"wallet.low_balance"}
    mine = [payloads[d.event_id] for d in sorted(found, key=lambda d: d.id)]
    return [p for p in mine if p["user_id"] == user_id]


def test_low_balance_alert_fires_once_per_crossing(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    r = api.client.post(
        f"{V1}/admin/webhooks",
        json={"url": "https://example.com/hook", "events": ["wallet.low_balance"]},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    endpoint = r.json()["id"]

    r = api.client.put(
        f"{V1}/users/{user_id}/low-balance", json={"threshold_ucr": 20 * CR}, headers=user
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "user_id": user_id,
        "threshold_ucr": 20 * CR,
        "threshold": "20.000000 cr",
        "custom": True,
        "available_ucr": 100 * CR,
        "alerted": False,
        "alerted_at": None,
    }
    assert low_balance_events(api, endpoint, user_id) == []

    spend(api, user_id, 85, key="u1")  # 15 left: below 20
    assert low_balance_events(api, endpoint, user_id) == [
        {
            "user_id": user_id,
            "available_ucr": 15 * CR,
            "available": "15.000000 cr",
            "threshold_ucr": 20 * CR,
            "threshold": "20.000000 cr",
        }
    ]
    state = api.client.get(f"{V1}/users/{user_id}/low-balance", headers=user).json()
    assert state["alerted"] is True and state["alerted_at"] is not None
    assert state["available_ucr"] == 15 * CR

    spend(api, user_id, 5, key="u2")  # still below: no second event
    assert len(low_balance_events(api, endpoint, user_id)) == 1

    api.grant(user_id, 50 * CR, key="topup")  # 60: recovered, the mark is cleared
    state = api.client.get(f"{V1}/users/{user_id}/low-balance", headers=user).json()
    assert state["alerted"] is False and state["available_ucr"] == 60 * CR
    assert len(low_balance_events(api, endpoint, user_id)) == 1

    spend(api, user_id, 45, key="u3")  # 15 again: a second crossing, a second event
    events = low_balance_events(api, endpoint, user_id)
    assert len(events) == 2 and events[1]["available_ucr"] == 15 * CR

    # back to the platform default (5 cr): above it now, so the warning clears
    r = api.client.put(
        f"{V1}/users/{user_id}/low-balance", json={"threshold_ucr": None}, headers=user
    )
    assert r.json()["custom"] is False and r.json()["threshold_ucr"] == 5 * CR
    assert r.json()["alerted"] is False


def test_low_balance_threshold_above_balance_alerts_at_once_and_admin_default(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=10 * CR)
    r = api.client.put(
        f"{V1}/users/{user_id}/low-balance", json={"threshold_ucr": 50 * CR}, headers=user
    )
    assert r.status_code == 200 and r.json()["alerted"] is True
    problem(
        api.client.put(f"{V1}/admin/low-balance-default", json={"threshold_ucr": 1}, headers=user),
        403,
        "forbidden",
    )
    problem(
        api.client.put(
            f"{V1}/users/{user_id}/low-balance", json={"threshold_ucr": -1}, headers=user
        ),
        422,
        "validation_error",
    )
    r = api.client.put(
        f"{V1}/admin/low-balance-default", json={"threshold_ucr": 2 * CR}, headers=api.admin
    )
    assert r.status_code == 200 and r.json() == {
        "threshold_ucr": 2 * CR,
        "threshold": "2.000000 cr",
    }
    other, other_headers = api.user("bob", credits_ucr=CR)
    state = api.client.get(f"{V1}/users/{other}/low-balance", headers=other_headers).json()
    assert state["threshold_ucr"] == 2 * CR and state["custom"] is False


# --------------------------------------------------------------------------- statement


def rows_of(r: Any) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(r.text)))


def test_statement_csv_oldest_first_signed_and_filtered(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, creator_headers = api.user("creator")
    _, stranger = api.user("mallory")
    meter(api, creator=creator)
    usage_id = spend(api, user_id, 10, key="u1")["usage_id"]
    r = api.client.post(
        f"{V1}/usage/{usage_id}/refund", json={"amount_ucr": 4 * CR}, headers=idem(api.admin, "r")
    )
    assert r.status_code == 201, r.text

    url = f"{V1}/users/{user_id}/statement.csv"
    r = api.client.get(url, headers=user)
    assert r.text.splitlines()[0] == (
        "transfer_id,created_at,account,code,kind,direction,amount_ucr,amount,ref_type,ref_id,"
        "reverses_id"
    )
    assert f'statement-user-{user_id}.csv"' in r.headers["content-disposition"]
    rows = rows_of(r)
    assert [(x["account"], x["code"], x["direction"], int(x["amount_ucr"])) for x in rows] == [
        ("wallet", "purchase", "in", 100 * CR),
        ("wallet", "usage_charge", "out", -10 * CR),
        ("wallet", "refund", "in", 4 * CR),
    ]
    assert [x["amount"] for x in rows] == ["100.000000 cr", "-10.000000 cr", "4.000000 cr"]
    ids = [int(x["transfer_id"]) for x in rows]
    assert ids == sorted(ids)
    assert sum(int(x["amount_ucr"]) for x in rows) == wallet(api, user_id)["balance_ucr"]
    assert rows[1]["ref_type"] == "usage" and rows[1]["ref_id"] == str(usage_id)

    # the creator's statement: the earning in, then its reversal out, on the earnings account
    earned = rows_of(api.client.get(f"{V1}/users/{creator}/statement.csv", headers=creator_headers))
    assert [(x["account"], int(x["amount_ucr"])) for x in earned] == [
        ("earnings", 2 * CR),
        ("earnings", -800_000),
    ]

    # [from, to): from the charge on, and up to (not including) the refund
    since, until = rows[1]["created_at"], rows[2]["created_at"]
    assert since < until
    window = rows_of(api.client.get(url, params={"from": since, "to": until}, headers=user))
    assert [x["transfer_id"] for x in window] == [rows[1]["transfer_id"]]
    later = rows_of(api.client.get(url, params={"from": until}, headers=user))
    assert [x["transfer_id"] for x in later] == [rows[2]["transfer_id"]]
    nothing = rows_of(api.client.get(url, params={"to": rows[0]["created_at"]}, headers=user))
    assert nothing == []

    problem(api.client.get(url, headers=stranger), 404, "user_not_found")
    problem(api.client.get(url), 401, "unauthenticated")
    assert rows_of(api.client.get(url, headers=api.admin)) == rows


def test_capture_of_an_expired_hold_before_the_jobs_run_is_409(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=10 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    hold = place(api, user_id, user, 4 * CR, "h", timeout_s=1).json()
    time.sleep(1.1)
    api.rejects(
        "POST",
        f"{V1}/holds/{hold['id']}/capture",
        409,
        "hold_expired",
        json={"amount_ucr": CR},
        headers=idem(user, "c"),
    )


# --------------------------------------------------------------------------- known bugs


def test_hold_listing_filtered_by_status_pages_through_every_match(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=10 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    first = place(api, user_id, user, CR, "h1").json()
    second = place(api, user_id, user, CR, "h2").json()
    api.client.post(
        f"{V1}/holds/{first['id']}/capture", json={"amount_ucr": CR}, headers=idem(user, "c")
    )
    api.client.post(f"{V1}/holds/{second['id']}/void", headers=idem(user, "v"))
    found: list[int] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"status": "voided", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = api.client.get(f"{V1}/users/{user_id}/holds", params=params, headers=user).json()
        found += [h["id"] for h in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert found == [second["id"]]


def test_statement_with_holds_reconciles_with_the_balance(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    captured = place(api, user_id, user, 30 * CR, "h1").json()
    r = api.client.post(
        f"{V1}/holds/{captured['id']}/capture",
        json={"amount_ucr": 12 * CR},
        headers=idem(user, "c"),
    )
    assert r.status_code == 200, r.text
    voided = place(api, user_id, user, 20 * CR, "h2").json()
    api.client.post(f"{V1}/holds/{voided['id']}/void", headers=idem(user, "v"))
    assert wallet(api, user_id)["balance_ucr"] == 88 * CR
    rows = rows_of(api.client.get(f"{V1}/users/{user_id}/statement.csv", headers=user))
    assert sum(int(x["amount_ucr"]) for x in rows) == 88 * CR


def test_low_balance_is_rechecked_when_a_hold_expires(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    endpoint = api.client.post(
        f"{V1}/admin/webhooks",
        json={"url": "https://example.com/hook", "events": ["wallet.low_balance"]},
        headers=api.admin,
    ).json()["id"]
    api.client.put(
        f"{V1}/users/{user_id}/low-balance", json={"threshold_ucr": 20 * CR}, headers=user
    )
    assert place(api, user_id, user, 90 * CR, "h", timeout_s=60).status_code == 201
    assert len(low_balance_events(api, endpoint, user_id)) == 1  # 10 available: alerted
    jobs.run_once(
        api.db.factory,
        box=SecretBox(TEST_SECRET_KEY),
        deliver=False,
        now=datetime.now(UTC) + timedelta(seconds=120),
    )
    spend(api, user_id, 85, key="u1")  # 100 → 15: a new crossing
    assert [e["available_ucr"] for e in low_balance_events(api, endpoint, user_id)] == [
        10 * CR,
        15 * CR,
    ]


def test_low_balance_alert_when_expired_grants_are_swept(api: Api) -> None:
    user_id, user = api.user("alice")
    endpoint = api.client.post(
        f"{V1}/admin/webhooks",
        json={"url": "https://example.com/hook", "events": ["wallet.low_balance"]},
        headers=api.admin,
    ).json()["id"]
    r = api.client.post(
        f"{V1}/users/{user_id}/grants",
        json={
            "amount_ucr": 50 * CR,
            "source": "bonus",
            "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        },
        headers=idem(api.admin, "g"),
    )
    assert r.status_code == 201, r.text
    api.client.put(
        f"{V1}/users/{user_id}/low-balance", json={"threshold_ucr": 20 * CR}, headers=user
    )
    report = jobs.run_once(
        api.db.factory,
        box=SecretBox(TEST_SECRET_KEY),
        deliver=False,
        now=datetime.now(UTC) + timedelta(days=2),
    )
    assert report.grants_swept == 1 and wallet(api, user_id)["balance_ucr"] == 0
    assert api.client.get(f"{V1}/users/{user_id}/low-balance", headers=user).json()["alerted"]
    assert [e["available_ucr"] for e in low_balance_events(api, endpoint, user_id)] == [0]
