"""Auto top-up over HTTP (issue 13): a crossing queues one top-up task, the job starts one
purchase (manual: an admin confirms it; Stripe: an off-session PaymentIntent on the saved
card, granted by the signed webhook exactly once in any order), the monthly caps hold, N
failures in a row switch it off with ``wallet.auto_topup_failed``, and concurrent charges on
PostgreSQL queue exactly one task. Exact µcr; the ledger invariants are checked after each
test by the ``db`` fixture. SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from modelbank import jobs
from modelbank.config import Settings, load_settings
from modelbank.metering import pipeline
from modelbank.metering.events import UsageEvent
from modelbank.tasks import service as tasks
from modelbank.wallets import autotopup_run
from modelbank.webhooks.models import outbox_events_table
from tests.api.conftest import TEST_SECRET_KEY, Api, problem
from tests.api.test_wallets import (
    CR,
    V1,
    confirm,
    deliver,
    meter,
    package_id,
    spend,
    stripe_api,  # noqa: F401 - the fixture
    wallet,
)
from tests.wallets.stripe_fixtures import SECRET_KEY, WEBHOOK_SECRET, FakeStripeHTTP

STARTER_UCR = 50 * CR
"""The default Starter package: 50 credits for $4.99."""


def settings_of(api: Api, **extra: Any) -> Settings:
    return load_settings(database_url=api.db.url, secret_key=TEST_SECRET_KEY, **extra)


def run_jobs(api: Api, fake: FakeStripeHTTP | None = None) -> jobs.JobReport:
    extra = {}
    if fake is not None:
        extra = {"stripe_secret_key": SECRET_KEY, "stripe_webhook_secret": WEBHOOK_SECRET}
    from modelbank.secrets import SecretBox

    return jobs.run_once(
        api.db.factory,
        box=SecretBox(TEST_SECRET_KEY),
        settings=settings_of(api, **extra),
        payment_http_client=fake,
    )


def topup_tasks(api: Api, user_id: int) -> list[Any]:
    with api.db.tx() as session:
        return tasks.list_tasks(session, kind="auto_topup", user_id=user_id)


def auto_purchases(api: Api, user_id: int, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = api.client.get(f"{V1}/users/{user_id}/purchases", headers=headers)
    assert r.status_code == 200, r.text
    return [p for p in r.json()["items"] if p["origin"] == "auto_topup"]


def enable(
    api: Api,
    user_id: int,
    headers: dict[str, str],
    *,
    threshold: int = 20 * CR,
    cap_count: int = 5,
    cap_uusd: int = 100_000_000,
    enabled: bool = True,
) -> Any:
    return api.client.put(
        f"{V1}/users/{user_id}/auto-topup",
        json={
            "enabled": enabled,
            "threshold_ucr": threshold,
            "package_id": package_id(api, "starter"),
            "monthly_cap_count": cap_count,
            "monthly_cap_uusd": cap_uusd,
        },
        headers=headers,
    )


def test_manual_auto_topup_once_per_crossing_then_admin_confirms(api: Api) -> None:
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    r = api.client.get(f"{V1}/users/{user_id}/auto-topup", headers=user)
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = enable(api, user_id, user)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["enabled"] is True and body["provider"] == "manual"
    assert body["threshold_ucr"] == 20 * CR and body["pending"] is False

    spend(api, user_id, 70, key="s1")  # 30 left: above the threshold, nothing queued
    assert topup_tasks(api, user_id) == []
    spend(api, user_id, 15, key="s2")  # 15 left: the crossing
    spend(api, user_id, 5, key="s3")  # 10 left: same crossing, no second task
    assert len(topup_tasks(api, user_id)) == 1
    assert api.client.get(f"{V1}/users/{user_id}/auto-topup", headers=user).json()["pending"]

    report = run_jobs(api)
    assert report.tasks_done == 1
    [p] = auto_purchases(api, user_id, user)
    assert p["status"] == "pending" and p["provider"] == "manual"
    assert p["credits_ucr"] == STARTER_UCR and p["price_uusd"] == 4_990_000
    assert run_jobs(api).tasks_done == 0  # nothing new: one purchase in flight

    r = confirm(api, p["id"], "confirm-1")
    assert r.status_code == 200, r.text
    assert wallet(api, user_id)["available_ucr"] == 10 * CR + STARTER_UCR

    spend(api, user_id, 45, key="s4")  # 15 left: a second crossing, a second top-up
    run_jobs(api)
    found = auto_purchases(api, user_id, user)
    assert [x["status"] for x in found] == ["completed", "pending"]
    assert len(topup_tasks(api, user_id)) == 2


def test_monthly_caps_are_respected(api: Api) -> None:
    user_id, user = api.user("bob", credits_ucr=30 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    # one top-up by count; the µUSD cap would allow two Starters ($9.98 ≤ $10)
    assert enable(api, user_id, user, cap_count=1, cap_uusd=10_000_000).status_code == 200
    spend(api, user_id, 15, key="b1")
    run_jobs(api)
    [p] = auto_purchases(api, user_id, user)
    assert confirm(api, p["id"], "c1").status_code == 200
    spend(api, user_id, 55, key="b2")  # 65 - 55 = 10: below again, but the cap is reached
    run_jobs(api)
    assert len(auto_purchases(api, user_id, user)) == 1
    state = api.client.get(f"{V1}/users/{user_id}/auto-topup", headers=user).json()
    assert state["last_error"] == "monthly cap reached" and state["pending"] is True
    spend(api, user_id, 1, key="b3")  # still the same crossing: no new task
    assert len(topup_tasks(api, user_id)) == 2

    # the µUSD cap alone: $4.99 fits once in $5.00
    user2, headers2 = api.user("carol", credits_ucr=30 * CR)
    assert enable(api, user2, headers2, cap_count=10, cap_uusd=5_000_000).status_code == 200
    spend(api, user2, 15, key="c1")
    run_jobs(api)
    [p2] = auto_purchases(api, user2, headers2)
    assert confirm(api, p2["id"], "c2").status_code == 200
    spend(api, user2, 60, key="c2")
    run_jobs(api)
    assert len(auto_purchases(api, user2, headers2)) == 1


def test_enabling_below_the_threshold_starts_at_once_and_bad_input(api: Api) -> None:
    user_id, user = api.user("dan", credits_ucr=5 * CR)
    assert enable(api, user_id, user).status_code == 200
    run_jobs(api)
    assert len(auto_purchases(api, user_id, user)) == 1
    r = api.client.put(
        f"{V1}/users/{user_id}/auto-topup",
        json={
            "enabled": True,
            "threshold_ucr": -1,
            "package_id": package_id(api, "starter"),
            "monthly_cap_count": 1,
            "monthly_cap_uusd": 1,
        },
        headers=user,
    )
    problem(r, 422)
    r = api.client.put(
        f"{V1}/users/{user_id}/auto-topup",
        json={
            "enabled": True,
            "threshold_ucr": 1,
            "package_id": 999_999,
            "monthly_cap_count": 1,
            "monthly_cap_uusd": 1,
        },
        headers=user,
    )
    problem(r, 404)


def test_another_user_cannot_read_or_set_auto_topup(api: Api) -> None:
    alice, alice_h = api.user("alice")
    _, bob_h = api.user("bob")
    body = {
        "enabled": True,
        "threshold_ucr": 1,
        "package_id": package_id(api, "starter"),
        "monthly_cap_count": 1,
        "monthly_cap_uusd": 1,
    }
    r = api.client.get(f"{V1}/users/{alice}/auto-topup", headers=bob_h)
    assert r.status_code in (403, 404), r.text
    r = api.client.put(f"{V1}/users/{alice}/auto-topup", json=body, headers=bob_h)
    assert r.status_code in (403, 404), r.text
    r = api.client.post(f"{V1}/users/{alice}/auto-topup/payment-method", headers=bob_h)
    assert r.status_code in (403, 404), r.text
    r = api.client.get(f"{V1}/users/{alice}/email-notices", headers=bob_h)
    assert r.status_code in (403, 404)
    r = api.client.put(
        f"{V1}/users/{alice}/email-notices", json={"email": "x@example.com"}, headers=bob_h
    )
    assert r.status_code in (403, 404)
    mine = api.client.get(f"{V1}/users/{alice}/auto-topup", headers=alice_h)
    assert mine.status_code == 200 and mine.json()["enabled"] is False


# --------------------------------------------------------------------------- Stripe


def save_card(api: Api, fake: FakeStripeHTTP, user_id: int, headers: dict[str, str]) -> None:
    r = api.client.post(f"{V1}/users/{user_id}/auto-topup/payment-method", headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["checkout_url"].startswith("https://checkout.stripe.com/")
    setup = [q for q in fake.requests if q.url.endswith("/v1/checkout/sessions")][-1]
    assert setup.form["mode"] == "setup"
    assert setup.form["setup_intent_data[metadata][user_id]"] == str(user_id)
    customer = setup.form["customer"]
    r = deliver(
        api,
        "setup_intent.succeeded",
        {
            "id": "seti_1",
            "object": "setup_intent",
            "customer": customer,
            "payment_method": "pm_card_1",
            "status": "succeeded",
            "metadata": {"user_id": str(user_id), "purpose": "auto_topup"},
        },
        f"evt_setup_{user_id}",
    )
    assert r.status_code == 200 and r.json()["result"] == "payment_method_saved", r.text
    # a card saved for some other Stripe customer is not taken for this user
    r = deliver(
        api,
        "setup_intent.succeeded",
        {
            "id": "seti_2",
            "object": "setup_intent",
            "customer": "cus_someone_else",
            "payment_method": "pm_other",
            "status": "succeeded",
            "metadata": {"user_id": str(user_id), "purpose": "auto_topup"},
        },
        f"evt_setup_other_{user_id}",
    )
    assert r.json()["result"] == "ignored"


def intent(p: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": p["external_id"],
        "object": "payment_intent",
        "amount": 499,
        "amount_received": 499 if status == "succeeded" else 0,
        "currency": "usd",
        "status": status,
        "metadata": {
            "purchase_id": str(p["id"]),
            "user_id": str(p["user_id"]),
            "credits_ucr": str(p["credits_ucr"]),
            "origin": "auto_topup",
        },
        **extra,
    }


def test_stripe_auto_topup_charges_the_saved_card_and_grants_once(
    stripe_api: tuple[Api, FakeStripeHTTP],  # noqa: F811
) -> None:
    api, fake = stripe_api
    user_id, user = api.user("erin", credits_ucr=30 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    problem(enable(api, user_id, user), 409, "payment_method_required")
    save_card(api, fake, user_id, user)
    r = enable(api, user_id, user)
    assert r.status_code == 200 and r.json()["has_payment_method"] is True, r.text

    spend(api, user_id, 15, key="e1")
    run_jobs(api, fake)
    pi = fake.last
    assert pi.url.endswith("/v1/payment_intents")
    assert pi.form["off_session"] == "true" and pi.form["confirm"] == "true"
    assert pi.form["payment_method"] == "pm_card_1" and pi.form["amount"] == "499"
    assert pi.headers["Idempotency-Key"].startswith("modelbank-autotopup-")
    [p] = auto_purchases(api, user_id, user)
    assert p["provider"] == "stripe" and p["status"] == "pending"
    assert p["external_id"].startswith("pi_")
    assert wallet(api, user_id)["available_ucr"] == 15 * CR  # nothing before the webhook

    # a failure reported after the success (reordered), the success twice, a third copy
    assert deliver(api, "payment_intent.succeeded", intent(p, "succeeded"), "evt_a").json() == {
        "result": "completed"
    }
    assert deliver(api, "payment_intent.succeeded", intent(p, "succeeded"), "evt_a").json() == {
        "result": "duplicate"
    }
    r = deliver(api, "payment_intent.succeeded", intent(p, "succeeded"), "evt_b")
    assert r.json() == {"result": "already_completed"}
    r = deliver(api, "payment_intent.payment_failed", intent(p, "requires_payment_method"), "evt_c")
    assert r.json() == {"result": "already_completed"}
    assert wallet(api, user_id)["available_ucr"] == 15 * CR + STARTER_UCR
    state = api.client.get(f"{V1}/users/{user_id}/auto-topup", headers=user).json()
    assert state["enabled"] and state["consecutive_failures"] == 0


def test_stripe_failure_first_then_success_grants_once(
    stripe_api: tuple[Api, FakeStripeHTTP],  # noqa: F811
) -> None:
    """Reordered the other way: a decline recorded first, then the payment succeeds."""
    api, fake = stripe_api
    user_id, user = api.user("fay", credits_ucr=30 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    save_card(api, fake, user_id, user)
    assert enable(api, user_id, user).status_code == 200
    spend(api, user_id, 15, key="f1")
    run_jobs(api, fake)
    [p] = auto_purchases(api, user_id, user)
    failed = intent(p, "requires_payment_method", last_payment_error={"code": "card_declined"})
    assert deliver(api, "payment_intent.payment_failed", failed, "evt_f1").json() == {
        "result": "failed"
    }
    assert (
        api.client.get(f"{V1}/users/{user_id}/auto-topup", headers=user).json()[
            "consecutive_failures"
        ]
        == 1
    )
    assert deliver(api, "payment_intent.succeeded", intent(p, "succeeded"), "evt_f2").json() == {
        "result": "completed"
    }
    assert deliver(api, "payment_intent.succeeded", intent(p, "succeeded"), "evt_f3").json() == {
        "result": "already_completed"
    }
    assert wallet(api, user_id)["available_ucr"] == 15 * CR + STARTER_UCR
    state = api.client.get(f"{V1}/users/{user_id}/auto-topup", headers=user).json()
    assert state["consecutive_failures"] == 0


def test_three_declines_in_a_row_switch_it_off_with_an_event(
    stripe_api: tuple[Api, FakeStripeHTTP],  # noqa: F811
) -> None:
    api, fake = stripe_api
    user_id, user = api.user("gus", credits_ucr=40 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    save_card(api, fake, user_id, user)
    assert enable(api, user_id, user).status_code == 200
    for attempt in range(3):
        spend(api, user_id, 5, key=f"g{attempt}")  # 35, 30, 25 … then below 20
    spend(api, user_id, 10, key="g-cross")  # 15: the crossing
    for attempt in range(3):
        fake.fail_next(402, error_type="card_error", message="declined", code="card_declined")
        run_jobs(api, fake)
        state = api.client.get(f"{V1}/users/{user_id}/auto-topup", headers=user).json()
        assert state["consecutive_failures"] == attempt + 1
        if attempt < 2:
            assert state["enabled"] is True and state["pending"] is False
            spend(api, user_id, 1, key=f"g-again-{attempt}")  # re-armed: the next charge retries
    assert state["enabled"] is False and state["disabled_reason"] == "failures"
    assert [p["status"] for p in auto_purchases(api, user_id, user)] == ["failed"] * 3
    with api.db.tx() as session:
        events = session.execute(
            select(outbox_events_table.c.payload).where(
                outbox_events_table.c.event_type == "wallet.auto_topup_failed"
            )
        ).all()
    assert [e.payload["consecutive_failures"] for e in events] == [3]
    assert events[0].payload["user_id"] == user_id
    spend(api, user_id, 1, key="g-after")  # off: nothing more is queued
    assert len(topup_tasks(api, user_id)) == 3
    assert wallet(api, user_id)["available_ucr"] == 12 * CR


# --------------------------------------------------------------------------- concurrency


def test_concurrent_charges_queue_one_top_up(api: Api) -> None:
    """Sixteen charges race across the threshold (PostgreSQL: the wallet's row lock and the
    conditional update; SQLite: the writer lock): exactly one task, one purchase."""
    user_id, user = api.user("hal", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    slug = "meter"
    meter(api, creator=creator)
    assert enable(api, user_id, user, threshold=90 * CR).status_code == 200

    def charge(i: int) -> str:
        with api.db.tx() as session:
            event = UsageEvent(f"race-{i}", user_id, slug, units=1)
            return pipeline.charge(session, event).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(charge, range(16)))
    assert results == ["charged"] * 16
    assert len(topup_tasks(api, user_id)) == 1
    assert wallet(api, user_id)["available_ucr"] == 84 * CR

    def start(_: int) -> str:
        provider = autotopup_run.ManualProvider()
        return autotopup_run.run(api.db.factory, provider, user_id)

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = sorted(pool.map(start, range(4)))
    assert outcomes.count("started") == 1, outcomes
    assert set(outcomes) <= {"started", "in_flight"}
    assert len(auto_purchases(api, user_id, user)) == 1


def test_purchase_listing_shows_origin(api: Api) -> None:
    user_id, user = api.user("ivy", credits_ucr=5 * CR)
    r = api.client.post(
        f"{V1}/users/{user_id}/purchases",
        json={"package_id": package_id(api, "starter"), "provider": "manual"},
        headers=user,
    )
    assert r.json()["origin"] == "checkout"
    assert enable(api, user_id, user).status_code == 200
    run_jobs(api)
    origins = [
        p["origin"]
        for p in api.client.get(f"{V1}/users/{user_id}/purchases", headers=user).json()["items"]
    ]
    assert origins == ["checkout", "auto_topup"]


def test_signed_payment_events_with_absurd_values_are_a_4xx_and_grant_nothing(
    stripe_api: tuple[Api, FakeStripeHTTP],  # noqa: F811
) -> None:
    """A correctly signed one-off purchase, PaymentIntent, SetupIntent or refund event with a
    30-digit id, a 300-character id or an out-of-range amount is refused with a problem or
    ignored, never a 500 (which Stripe retries for days); the ledger is unchanged."""
    api, _ = stripe_api
    user_id, _ = api.user("odd", credits_ucr=30 * CR)
    huge, long_ = "9" * 30, "x" * 300
    meta = {"purchase_id": huge, "user_id": str(user_id), "origin": "auto_topup"}
    pi = {"id": "pi_odd", "object": "payment_intent", "amount": 499, "amount_received": 499}
    seti = {"id": "seti_odd", "object": "setup_intent", "status": "succeeded"}
    seti_meta = {"user_id": str(user_id), "purpose": "auto_topup"}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("payment_intent.succeeded", pi | {"metadata": meta}),
        ("payment_intent.succeeded", pi | {"id": "pi_" + long_, "metadata": meta}),
        ("payment_intent.succeeded", pi | {"amount_received": 2**62, "metadata": meta}),
        ("payment_intent.payment_failed", pi | {"metadata": meta}),
        ("setup_intent.succeeded", seti | {"metadata": seti_meta | {"user_id": huge}}),
        ("setup_intent.succeeded", seti | {"customer": "cus_" + long_, "metadata": seti_meta}),
        (
            "setup_intent.succeeded",
            seti | {"customer": "cus_1", "payment_method": "pm_" + long_, "metadata": seti_meta},
        ),
        (
            "checkout.session.completed",
            {
                "id": "cs_1",
                "mode": "payment",
                "payment_status": "paid",
                "client_reference_id": huge,
                "amount_total": 499,
            },
        ),
        (
            "checkout.session.completed",
            {
                "id": "cs_" + long_,
                "mode": "payment",
                "payment_status": "paid",
                "client_reference_id": "1",
                "amount_total": 499,
            },
        ),
        (
            "checkout.session.completed",
            {
                "id": "cs_2",
                "mode": "payment",
                "payment_status": "paid",
                "client_reference_id": "1",
                "amount_total": 2**62,
            },
        ),
        (
            "charge.refunded",
            {
                "id": "ch_1",
                "payment_intent": "pi_" + long_,
                "amount_refunded": 499,
                "metadata": {"purchase_id": huge},
            },
        ),
        (
            "charge.refunded",
            {
                "id": "ch_2",
                "payment_intent": "pi_1",
                "amount_refunded": 2**62,
                "metadata": {"purchase_id": "1"},
            },
        ),
    ]
    for i, (kind, obj) in enumerate(cases):
        r = deliver(api, kind, obj, f"evt_odd_{i}")
        assert r.status_code < 500, (i, kind, r.text)
        if r.status_code >= 400:
            problem(r, 422, "invalid_input")
    assert wallet(api, user_id)["available_ucr"] == 30 * CR


def test_a_card_saved_for_an_unknown_user_is_ignored_not_retried(
    stripe_api: tuple[Api, FakeStripeHTTP],  # noqa: F811
) -> None:
    """A signed ``setup_intent.succeeded`` naming no user of ours is acknowledged (200,
    ignored): a 404 makes Stripe retry it for three days."""
    api, _ = stripe_api
    obj = {
        "id": "seti_nobody",
        "object": "setup_intent",
        "customer": "cus_1",
        "payment_method": "pm_1",
        "status": "succeeded",
        "metadata": {"user_id": "999999", "purpose": "auto_topup"},
    }
    r = deliver(api, "setup_intent.succeeded", obj, "evt_setup_nobody")
    assert r.status_code == 200 and r.json() == {"result": "ignored"}, r.text
    r = deliver(api, "setup_intent.succeeded", obj, "evt_setup_nobody")
    assert r.json() == {"result": "duplicate"}
