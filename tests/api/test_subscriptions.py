"""Plans and subscriptions over HTTP (issue 13): admin-editable plans, manual and Stripe
subscriptions, a period's credits granted once per invoice in any order, the first-period
bonus, rollover of the unspent fraction with its cost basis, cancellation and failed renewals.
Balances to the µcr; Stripe payloads signed with the SDK's helper, never the network."""

from __future__ import annotations

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
from modelbank.money import div_half_even
from modelbank.secrets import SecretBox
from modelbank.webhooks.models import outbox_events_table as outbox
from tests.api.conftest import TEST_SECRET_KEY, Api, bearer, problem
from tests.conftest import Db
from tests.wallets.stripe_fixtures import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    FakeStripeHTTP,
    disable_stripe_telemetry,
    signed_event,
)

V1 = "/api/v1"
CREDIT = 1_000_000
PLAN = {
    "slug": "basic",
    "name": "Basic",
    "price_uusd": 9_990_000,
    "credits_ucr": 100 * CREDIT,
    "rollover_bps": 2_500,
    "first_period_bonus_ucr": 20 * CREDIT,
}


def make_plan(api: Api, **fields: Any) -> dict[str, Any]:
    r = api.client.post(f"{V1}/admin/plans", json={**PLAN, **fields}, headers=api.admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def balance(api: Api, user_id: int) -> int:
    r = api.client.get(f"{V1}/users/{user_id}/wallet", headers=api.admin)
    assert r.status_code == 200, r.text
    return int(r.json()["balance_ucr"])


def open_grants(api: Api, user_id: int) -> list[dict[str, Any]]:
    r = api.client.get(f"{V1}/users/{user_id}/grants?open=true", headers=api.admin)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def events(api: Api, event_type: str) -> list[dict[str, Any]]:
    with api.db.tx() as session:
        rows = session.execute(select(outbox.c.payload).where(outbox.c.event_type == event_type))
        return [dict(r[0]) for r in rows]


def subscribe(api: Api, user_id: int, headers: dict[str, str], plan_id: int, **kw: Any) -> Any:
    return api.client.post(
        f"{V1}/users/{user_id}/subscriptions", json={"plan_id": plan_id, **kw}, headers=headers
    )


def confirm(api: Api, sub_id: int, key: str) -> Any:
    return api.client.post(
        f"{V1}/admin/subscriptions/{sub_id}/periods",
        headers={**api.admin, "Idempotency-Key": key},
    )


# --------------------------------------------------------------------------- plans


def test_plans_are_admin_data(api: Api) -> None:
    _, user = api.user("pat")
    plan = make_plan(api)
    assert (
        plan["price"] == "$9.99"
        and plan["credits"] == "100.000000 cr"
        and plan["rollover_bps"] == 2500
    )
    listed = api.client.get(f"{V1}/plans", headers=user).json()["items"]
    assert [p["slug"] for p in listed] == ["basic"]
    api.rejects("POST", f"{V1}/admin/plans", 403, json={**PLAN, "slug": "x"}, headers=user)
    api.rejects(
        "POST",
        f"{V1}/admin/plans",
        422,
        json={**PLAN, "slug": "y", "rollover_bps": 10_001},
        headers=api.admin,
    )
    api.rejects(
        "POST",
        f"{V1}/admin/plans",
        422,
        json={**PLAN, "slug": "z", "price_uusd": 9_990_001},
        headers=api.admin,
    )
    r = api.client.patch(
        f"{V1}/admin/plans/{plan['id']}", json={"is_active": False}, headers=api.admin
    )
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert api.client.get(f"{V1}/plans", headers=user).json()["items"] == []
    api.rejects("GET", f"{V1}/plans?include_inactive=true", 403, headers=user)


# --------------------------------------------------------------------------- manual


def test_manual_subscription_grants_each_confirmed_period_once(api: Api) -> None:
    user_id, user = api.user("mia")
    plan = make_plan(api)
    r = subscribe(api, user_id, user, plan["id"], provider="manual")
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["status"] == "pending" and sub["checkout_url"] is None
    assert balance(api, user_id) == 0

    r = confirm(api, sub["id"], "p1")
    assert r.status_code == 201, r.text
    period = r.json()
    assert period["credits_ucr"] == 100 * CREDIT and period["bonus_ucr"] == 20 * CREDIT
    assert confirm(api, sub["id"], "p1").json() == period  # a retried confirmation
    assert balance(api, user_id) == 120 * CREDIT
    grants = open_grants(api, user_id)
    assert sorted((g["source"], g["amount_ucr"], g["cost_basis_uusd"]) for g in grants) == [
        ("bonus", 20 * CREDIT, 0),
        ("purchased", 100 * CREDIT, 9_990_000),
    ]
    end = datetime.fromisoformat(period["period_end"])
    assert all(datetime.fromisoformat(g["expires_at"]) == end for g in grants)
    status = api.client.get(f"{V1}/subscriptions/{sub['id']}", headers=user).json()
    assert status["status"] == "active" and status["periods_paid"] == 1

    r = confirm(api, sub["id"], "p2")  # the next period: no bonus
    assert r.status_code == 201 and r.json()["bonus_ucr"] == 0
    assert r.json()["period_start"] == period["period_end"]
    assert balance(api, user_id) == 220 * CREDIT
    assert len(events(api, "subscription.period_paid")) == 2

    # a second live subscription is refused; cancelling a manual one ends it now
    api.rejects(
        "POST",
        f"{V1}/users/{user_id}/subscriptions",
        409,
        "subscription_state_conflict",
        json={"plan_id": plan["id"], "provider": "manual"},
        headers=user,
    )
    r = api.client.post(f"{V1}/subscriptions/{sub['id']}/cancel", headers=user)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    api.rejects(
        "POST",
        f"{V1}/admin/subscriptions/{sub['id']}/periods",
        409,
        "subscription_state_conflict",
        headers={**api.admin, "Idempotency-Key": "p3"},
    )
    assert balance(api, user_id) == 220 * CREDIT  # granted credits stay until they expire


def test_rollover_moves_the_fraction_with_its_cost_basis(api: Api) -> None:
    """25 % of what is left when the period ends becomes a new grant (rounded down to the
    µcr) carrying its exact share of the cost basis; the rest expires."""
    user_id, user = api.user("rolf")
    plan = make_plan(api, first_period_bonus_ucr=0, credits_ucr=100 * CREDIT + 3)
    sub = subscribe(api, user_id, user, plan["id"], provider="manual").json()
    period = confirm(api, sub["id"], "p1").json()
    model = api.model("m-roll")
    r = api.charge(
        user_id, model["slug"], key="use-1", input_tokens=1_000_000, output_tokens=500_000
    )  # 1 + 1 = 2 credits
    assert r.status_code == 201, r.text
    spent = 100 * CREDIT + 3 - balance(api, user_id)
    assert spent == 2 * CREDIT
    left = 100 * CREDIT + 3 - spent
    end = datetime.fromisoformat(period["period_end"])
    jobs.run_once(
        api.db.factory,
        box=SecretBox(TEST_SECRET_KEY),
        deliver=False,
        now=end + timedelta(seconds=1),
    )
    rolled = left * 2_500 // 10_000
    assert balance(api, user_id) == rolled
    (grant,) = open_grants(api, user_id)
    # the rolled credits carry basis(consumed after) − basis(consumed before), half-even
    total = 100 * CREDIT + 3
    expected = div_half_even(9_990_000 * (spent + rolled), total) - div_half_even(
        9_990_000 * spent, total
    )
    assert grant["amount_ucr"] == rolled and grant["cost_basis_uusd"] == expected
    assert datetime.fromisoformat(grant["expires_at"]) == end + (
        end - datetime.fromisoformat(period["period_start"])
    )
    # idempotent: another run rolls nothing more
    jobs.run_once(
        api.db.factory,
        box=SecretBox(TEST_SECRET_KEY),
        deliver=False,
        now=end + timedelta(seconds=2),
    )
    assert balance(api, user_id) == rolled


def test_manual_renewal_job(db: Db) -> None:
    settings = load_settings(database_url=db.url, secret_key=TEST_SECRET_KEY)
    app = create_app(settings, engine=db.engine)
    with db.tx() as session:
        admin = bearer(auth.create_key(session, auth.Role.ADMIN, name="a").secret)
    with TestClient(app) as client:
        api = Api(client, db, admin, admin)
        user_id, user = api.user("renee")
        plan = make_plan(api, rollover_bps=0)
        sub = subscribe(api, user_id, user, plan["id"], provider="manual").json()
        period = confirm(api, sub["id"], "p1").json()
        end = datetime.fromisoformat(period["period_end"])
        box = SecretBox(TEST_SECRET_KEY)
        report = jobs.run_once(
            db.factory, box=box, deliver=False, now=end, renew_manual_subscriptions=True
        )
        assert report.subscriptions_renewed == 1
        again = jobs.run_once(
            db.factory, box=box, deliver=False, now=end, renew_manual_subscriptions=True
        )
        assert again.subscriptions_renewed == 0
        periods = client.get(f"{V1}/subscriptions/{sub['id']}/periods", headers=user).json()
        assert [p["invoice_ref"] for p in periods["items"]] == ["manual:1", "manual:2"]
        # the first period's credits expired at its end; the second's are there
        assert balance(api, user_id) == 100 * CREDIT


# --------------------------------------------------------------------------- Stripe


@pytest.fixture
def stripe_api(db: Db, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, FakeStripeHTTP]]:
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
    r = api.client.post(
        f"{V1}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    return r.json()["result"]


def invoice(sub_id: int, invoice_id: str, start: datetime, *, amount: int = 999) -> dict[str, Any]:
    """An Invoice object of a subscription (the newer API shape: ``parent``)."""
    end = start + timedelta(days=30)
    return {
        "id": invoice_id,
        "object": "invoice",
        "amount_paid": amount,
        "billing_reason": "subscription_cycle",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {
                "subscription": "sub_test_1",
                "metadata": {"subscription_id": str(sub_id)},
            },
        },
        "lines": {
            "data": [{"period": {"start": int(start.timestamp()), "end": int(end.timestamp())}}]
        },
    }


def test_stripe_subscription_grants_once_per_invoice_in_any_order(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, fake = stripe_api
    user_id, user = api.user("stella")
    plan = make_plan(api)
    r = subscribe(api, user_id, user, plan["id"])
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["provider"] == "stripe" and sub["checkout_url"].startswith("https://checkout")
    form = fake.last.form
    assert form["mode"] == "subscription"
    assert form["line_items[0][price_data][recurring][interval]"] == "month"
    assert form["line_items[0][price_data][unit_amount]"] == "999"
    assert form["subscription_data[metadata][subscription_id]"] == str(sub["id"])

    now = datetime.now(UTC).replace(microsecond=0)
    # invoice.paid arrives before checkout.session.completed: the metadata names it
    assert deliver(api, "invoice.paid", invoice(sub["id"], "in_1", now), "evt_1") == (
        "period_granted"
    )
    assert deliver(api, "invoice.paid", invoice(sub["id"], "in_1", now), "evt_1") == "duplicate"
    assert deliver(api, "invoice.paid", invoice(sub["id"], "in_1", now), "evt_1b") == (
        "period_already_granted"
    )
    assert balance(api, user_id) == 120 * CREDIT
    checkout = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "mode": "subscription",
        "subscription": "sub_test_1",
        "metadata": {"subscription_id": str(sub["id"])},
    }
    assert deliver(api, "checkout.session.completed", checkout, "evt_0") == "linked"
    # the next period, then a renewal that fails
    later = now + timedelta(days=30)
    assert deliver(api, "invoice.paid", invoice(sub["id"], "in_2", later), "evt_2") == (
        "period_granted"
    )
    assert balance(api, user_id) == 220 * CREDIT
    status = api.client.get(f"{V1}/subscriptions/{sub['id']}", headers=user).json()
    assert status["status"] == "active" and status["periods_paid"] == 2
    assert status["current_period_start"].startswith(later.strftime("%Y-%m-%dT%H:%M:%S"))
    # an older invoice delivered late does not move the current period back
    failed = invoice(sub["id"], "in_3", later + timedelta(days=30))
    assert deliver(api, "invoice.payment_failed", failed, "evt_3") == "renewal_failed"
    status = api.client.get(f"{V1}/subscriptions/{sub['id']}", headers=user).json()
    assert status["status"] == "past_due"
    (notice,) = events(api, "subscription.renewal_failed")
    assert notice["user_id"] == user_id and notice["subscription_id"] == sub["id"]

    # cancelling asks Stripe to stop at the period's end; the deletion event ends it
    fake.respond_next(
        200, {"id": "sub_test_1", "object": "subscription", "cancel_at_period_end": True}
    )
    r = api.client.post(f"{V1}/subscriptions/{sub['id']}/cancel", headers=user)
    assert r.status_code == 200 and r.json()["cancel_at_period_end"] is True
    assert fake.last.url.endswith("/v1/subscriptions/sub_test_1")
    assert fake.last.form["cancel_at_period_end"] == "true"
    deleted = {"id": "sub_test_1", "object": "subscription", "metadata": {}}
    assert deliver(api, "customer.subscription.deleted", deleted, "evt_4") == "cancelled"
    status = api.client.get(f"{V1}/subscriptions/{sub['id']}", headers=user).json()
    assert status["status"] == "cancelled"
    assert balance(api, user_id) == 220 * CREDIT


def test_stripe_subscription_events_of_strangers_are_ignored(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, _ = stripe_api
    now = datetime.now(UTC)
    assert deliver(api, "invoice.paid", invoice(999, "in_x", now), "evt_x") == (
        "unknown_subscription"
    )
    body, _ = signed_event(WEBHOOK_SECRET, "invoice.paid", invoice(1, "in_y", now))
    before = api.ledger_state()
    r = api.client.post(
        f"{V1}/webhooks/stripe", content=body, headers={"Stripe-Signature": "t=1,v1=forged"}
    )
    problem(r, 400, "webhook_signature_invalid")
    assert api.ledger_state() == before


def test_stripe_cancel_refused_changes_nothing_and_an_expired_checkout_cancels(
    stripe_api: tuple[Api, FakeStripeHTTP],
) -> None:
    api, fake = stripe_api
    user_id, user = api.user("quinn")
    plan = make_plan(api)
    sub = subscribe(api, user_id, user, plan["id"]).json()
    now = datetime.now(UTC).replace(microsecond=0)
    assert deliver(api, "invoice.paid", invoice(sub["id"], "in_q1", now), "evt_q1") == (
        "period_granted"
    )
    fake.fail_next(500, error_type="api_error", message="boom")
    fake.fail_next(500, error_type="api_error", message="boom")
    fake.fail_next(500, error_type="api_error", message="boom")
    api.rejects(
        "POST",
        f"{V1}/subscriptions/{sub['id']}/cancel",
        502,
        "payment_provider_error",
        headers=user,
    )
    status = api.client.get(f"{V1}/subscriptions/{sub['id']}", headers=user).json()
    assert status["status"] == "active" and status["cancel_at_period_end"] is False

    # another user's pending checkout that expires is cancelled; its credits never came
    other_id, other = api.user("rita")
    pending = subscribe(api, other_id, other, plan["id"]).json()
    expired = {
        "id": "cs_x",
        "object": "checkout.session",
        "mode": "subscription",
        "metadata": {"subscription_id": str(pending["id"])},
    }
    assert deliver(api, "checkout.session.expired", expired, "evt_q2") == "cancelled"
    status = api.client.get(f"{V1}/subscriptions/{pending['id']}", headers=other).json()
    assert status["status"] == "cancelled" and balance(api, other_id) == 0
    assert [e["subscription_id"] for e in events(api, "subscription.cancelled")] == [pending["id"]]
