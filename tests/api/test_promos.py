"""Referral and promo credits over HTTP (issue 13): referral codes, the reward on the referred
user's first purchase (once, never for self-referral or a second referral), promo codes with
expiry, use limit and once-per-user, redeemed idempotently and never past the limit under
concurrency (PostgreSQL threads). Every credit is a bonus grant from platform_promotions."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from modelbank.ledger.codes import AccountCode
from modelbank.ledger.models import accounts_table as accounts
from modelbank.wallets import promos, referrals
from modelbank.wallets.billing_errors import PromoCodeUnavailable
from modelbank.wallets.billing_models import redemptions_table as redemptions
from modelbank.wallets.models import grants_table
from tests import factories
from tests.api.conftest import Api
from tests.conftest import Db

V1 = "/api/v1"
CREDIT = 1_000_000


def balance(api: Api, user_id: int) -> int:
    r = api.client.get(f"{V1}/users/{user_id}/wallet", headers=api.admin)
    assert r.status_code == 200, r.text
    return int(r.json()["balance_ucr"])


def promotions_spent(api: Api) -> int:
    """What ``platform_promotions`` has given away (debits − credits, µcr)."""
    with api.db.tx() as session:
        row = session.execute(
            select(accounts.c.debits_posted - accounts.c.credits_posted).where(
                accounts.c.code == AccountCode.PLATFORM_PROMOTIONS.value
            )
        ).scalar()
    return int(row or 0)


def buy_manual(api: Api, user_id: int, headers: dict[str, str], key: str) -> dict[str, Any]:
    packages = api.client.get(f"{V1}/packages", headers=headers).json()["items"]
    starter = next(p for p in packages if p["slug"] == "starter")
    r = api.client.post(
        f"{V1}/users/{user_id}/purchases",
        json={"package_id": starter["id"], "provider": "manual"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = api.client.post(
        f"{V1}/admin/purchases/{r.json()['id']}/confirm",
        headers={**api.admin, "Idempotency-Key": key},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_referral_rewards_both_on_the_first_purchase_once(api: Api) -> None:
    alice_id, alice = api.user("alice")
    r = api.client.get(f"{V1}/users/{alice_id}/referral", headers=alice)
    assert r.status_code == 200, r.text
    code = r.json()["code"]
    assert api.client.get(f"{V1}/users/{alice_id}/referral", headers=alice).json()["code"] == code

    r = api.client.post(
        f"{V1}/users", json={"external_id": "bob", "referral_code": code.lower()}, headers=api.admin
    )
    assert r.status_code == 201, r.text
    bob_id = r.json()["id"]
    bob = api.client.post(f"{V1}/users/{bob_id}/keys", json={}, headers=api.admin).json()["key"]
    bob_h = {"Authorization": f"Bearer {bob}"}
    assert (
        api.client.get(f"{V1}/users/{bob_id}/referral", headers=bob_h).json()["referred_by_user_id"]
        == alice_id
    )
    assert balance(api, bob_id) == 0 and balance(api, alice_id) == 0  # nothing before buying

    buy_manual(api, bob_id, bob_h, "c1")
    assert balance(api, bob_id) == 50 * CREDIT + 10 * CREDIT
    assert balance(api, alice_id) == 10 * CREDIT
    assert promotions_spent(api) == 20 * CREDIT
    buy_manual(api, bob_id, bob_h, "c2")  # a second purchase rewards nothing more
    assert balance(api, alice_id) == 10 * CREDIT
    assert balance(api, bob_id) == 100 * CREDIT + 10 * CREDIT
    mine = api.client.get(f"{V1}/users/{alice_id}/referral", headers=alice).json()
    assert (mine["referred_count"], mine["rewarded_count"]) == (1, 1)
    bonus = [
        g
        for g in api.client.get(f"{V1}/users/{alice_id}/grants", headers=alice).json()["items"]
        if g["source"] == "bonus"
    ]
    assert len(bonus) == 1 and bonus[0]["cost_basis_uusd"] == 0
    assert bonus[0]["expires_at"] is not None  # 90 days by default

    # no reward for self-referral, a second referral, or a user who already bought
    api.rejects(
        "POST",
        f"{V1}/users/{alice_id}/referral",
        409,
        "referral_not_allowed",
        json={"code": code},
        headers=alice,
    )
    bob_code = api.client.get(f"{V1}/users/{bob_id}/referral", headers=bob_h).json()["code"]
    api.rejects(
        "POST",
        f"{V1}/users/{bob_id}/referral",
        409,
        "referral_not_allowed",
        json={"code": code},
        headers=bob_h,
    )
    api.rejects(
        "POST",
        f"{V1}/users/{alice_id}/referral",
        409,
        "referral_not_allowed",
        json={"code": bob_code},
        headers=alice,
    )
    # an unknown code refuses the sign-up: nothing is created
    api.rejects(
        "POST",
        f"{V1}/users",
        404,
        "referral_code_not_found",
        json={"external_id": "carol", "referral_code": "NOPE1234"},
        headers=api.admin,
    )
    assert api.client.get(f"{V1}/users", headers=api.admin).json()["items"][-1]["external_id"] == (
        "bob"
    )


def test_referral_settings_are_admin_and_apply(api: Api) -> None:
    r = api.client.put(
        f"{V1}/admin/referral-settings",
        json={
            "referral_referrer_bonus_ucr": 0,
            "referral_referred_bonus_ucr": 3 * CREDIT,
            "referral_bonus_ttl_s": 0,
        },
        headers=api.admin,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "referral_referrer_bonus_ucr": 0,
        "referral_referred_bonus_ucr": 3 * CREDIT,
        "referral_bonus_ttl_s": 0,
    }
    a_id, a = api.user("ann")
    api.rejects("PUT", f"{V1}/admin/referral-settings", 403, json={}, headers=a)
    code = api.client.get(f"{V1}/users/{a_id}/referral", headers=a).json()["code"]
    b_id, b = api.user("ben")
    r = api.client.post(f"{V1}/users/{b_id}/referral", json={"code": code}, headers=b)
    assert r.status_code == 200 and r.json()["referred_by_user_id"] == a_id
    buy_manual(api, b_id, b, "k1")
    assert balance(api, a_id) == 0  # the referrer's side is off
    assert balance(api, b_id) == 53 * CREDIT
    grants = api.client.get(f"{V1}/users/{b_id}/grants", headers=b).json()["items"]
    assert [g["expires_at"] for g in grants if g["source"] == "bonus"] == [None]


def test_promo_codes(api: Api) -> None:
    a_id, a = api.user("uma")
    b_id, b = api.user("vic")
    r = api.client.post(
        f"{V1}/admin/promo-codes",
        json={"code": "launch-5", "bonus_ucr": 5 * CREDIT, "use_limit": 1, "grant_ttl_s": 86_400},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["code"] == "LAUNCH-5" and r.json()["uses"] == 0
    api.rejects(
        "POST", f"{V1}/admin/promo-codes", 403, json={"code": "x", "bonus_ucr": 1}, headers=a
    )
    r = api.client.post(
        f"{V1}/users/{a_id}/promo-redemptions", json={"code": "launch-5"}, headers=a
    )
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["bonus_ucr"] == 5 * CREDIT and first["replayed"] is False
    r = api.client.post(
        f"{V1}/users/{a_id}/promo-redemptions", json={"code": "LAUNCH-5"}, headers=a
    )
    assert r.status_code == 200 and r.json() == {**first, "replayed": True}  # idempotent
    assert balance(api, a_id) == 5 * CREDIT
    body = api.rejects(
        "POST",
        f"{V1}/users/{b_id}/promo-redemptions",
        409,
        "promo_code_unavailable",
        json={"code": "launch-5"},
        headers=b,
    )
    assert "used up" in body["detail"]
    api.rejects(
        "POST",
        f"{V1}/users/{b_id}/promo-redemptions",
        404,
        "promo_code_not_found",
        json={"code": "nope"},
        headers=b,
    )
    # a code that may be redeemed many times per user, until it expires
    soon = datetime.now(UTC) + timedelta(seconds=30)
    r = api.client.post(
        f"{V1}/admin/promo-codes",
        json={
            "code": "MANY",
            "bonus_ucr": 1,
            "per_user_once": False,
            "expires_at": soon.isoformat(),
        },
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    many = r.json()
    for _ in range(3):
        r = api.client.post(
            f"{V1}/users/{b_id}/promo-redemptions", json={"code": "many"}, headers=b
        )
        assert r.status_code == 201, r.text
    assert balance(api, b_id) == 3
    mine = api.client.get(f"{V1}/users/{b_id}/promo-redemptions", headers=b).json()["items"]
    assert [m["bonus_ucr"] for m in mine] == [1, 1, 1]
    r = api.client.post(f"{V1}/admin/promo-codes/{many['id']}/deactivate", headers=api.admin)
    assert r.status_code == 200 and r.json()["is_active"] is False
    api.rejects(
        "POST",
        f"{V1}/users/{b_id}/promo-redemptions",
        404,
        "promo_code_not_found",
        json={"code": "many"},
        headers=b,
    )
    listed = api.client.get(f"{V1}/admin/promo-codes", headers=api.admin).json()["items"]
    assert [(p["code"], p["uses"]) for p in listed] == [("LAUNCH-5", 1), ("MANY", 3)]
    assert promotions_spent(api) == 5 * CREDIT + 3


def test_expired_promo_code_is_refused(db: Db) -> None:
    with db.tx() as session:
        user_id = factories.user(session, "wes")
        promos.create_promo(
            session,
            code="OLD",
            bonus_ucr=CREDIT,
            expires_at=datetime.now(UTC) + timedelta(minutes=1),
        )
    later = datetime.now(UTC) + timedelta(minutes=2)
    with db.tx() as session:
        try:
            promos.redeem(session, user_id, "old", now=later)
        except PromoCodeUnavailable as exc:
            assert exc.context["reason"] == "expired"
        else:
            raise AssertionError("an expired code was redeemed")


def test_promo_limit_and_per_user_once_hold_under_concurrency(db: Db) -> None:
    """16 threads redeem at once on PostgreSQL: 4 users × 4 tries of a once-per-user code
    limited to 3 uses. Exactly 3 redemptions, 3 users, never a 500-class failure."""
    if db.backend != "postgres":
        pytest.skip("row-lock concurrency is a PostgreSQL test (SQLite serialises writers)")
    with db.tx() as session:
        ids = [factories.user(session, f"c{i}") for i in range(4)]
        promos.create_promo(session, code="RUSH", bonus_ucr=7, use_limit=3)
    start = threading.Barrier(16)

    def attempt(user_id: int) -> str:
        start.wait()
        try:
            with db.tx() as session:
                _, new = promos.redeem(session, user_id, "RUSH")
            return "new" if new else "replayed"
        except PromoCodeUnavailable:
            return "exhausted"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(attempt, [u for u in ids for _ in range(4)]))
    assert outcomes.count("new") == 3, outcomes
    with db.tx() as session:
        rows = session.execute(
            select(redemptions.c.user_id, func.count()).group_by(redemptions.c.user_id)
        ).all()
    assert len(rows) == 3 and all(count == 1 for _, count in rows)


def test_a_user_is_referred_and_rewarded_once_under_concurrency(db: Db) -> None:
    """PostgreSQL threads: 8 referrers' codes applied to one new user at once (one wins, the
    others are refused as already referred), then 8 of that user's purchases completed at
    once (one reward each side)."""
    if db.backend != "postgres":
        pytest.skip("row-lock concurrency is a PostgreSQL test (SQLite serialises writers)")
    from modelbank.wallets import purchases
    from modelbank.wallets.billing_errors import ReferralNotAllowed
    from modelbank.wallets.providers import ManualProvider

    with db.tx() as session:
        new_user = factories.user(session, "newbie")
        referrers = [factories.user(session, f"ref{i}") for i in range(8)]
        codes = [referrals.referral_code(session, r) for r in referrers]
    start = threading.Barrier(8)

    def refer(code: str) -> str:
        start.wait()
        try:
            with db.tx() as session:
                referrals.apply_referral(session, new_user, code)
            return "referred"
        except ReferralNotAllowed as exc:
            return str(exc.context["reason"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(refer, codes))
    assert sorted(outcomes) == ["already_referred"] * 7 + ["referred"], outcomes

    bought = [
        purchases.start(db.tx, ManualProvider(), new_user, 1, success_url="x", cancel_url="x").id
        for _ in range(8)
    ]
    again = threading.Barrier(8)

    def complete(purchase_id: int) -> None:
        again.wait()
        with db.tx() as session:
            purchases.complete(session, purchase_id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(complete, bought))
    with db.tx() as session:
        referral = referrals.referral_of(session, new_user)
        assert referral is not None and referral.rewarded_at is not None
        bonus = session.execute(
            select(func.count()).select_from(grants_table).where(grants_table.c.source == "bonus")
        ).scalar()
    assert bonus == 2  # one for the new user, one for the referrer


def test_a_user_who_paid_a_subscription_period_is_not_referred(api: Api) -> None:
    """A paid subscription period is a purchase: its owner is no longer a new user, so a
    referral code applied afterwards is refused (else their next purchase rewards both)."""
    from tests.api.test_subscriptions import confirm, make_plan, subscribe

    referrer, referrer_h = api.user("rita")
    code = api.client.get(f"{V1}/users/{referrer}/referral", headers=referrer_h).json()["code"]
    user_id, user = api.user("sam")
    plan = make_plan(api, first_period_bonus_ucr=0)
    sub = subscribe(api, user_id, user, plan["id"], provider="manual").json()
    assert confirm(api, sub["id"], "p1").status_code == 201
    body = api.rejects(
        "POST",
        f"{V1}/users/{user_id}/referral",
        409,
        "referral_not_allowed",
        json={"code": code},
        headers=user,
    )
    assert body["reason"] == "already_purchased"
    buy_manual(api, user_id, user, "buy-1")
    assert balance(api, referrer) == 0


def test_a_retried_redemption_with_its_idempotency_key_grants_once(api: Api) -> None:
    """A code that may be redeemed many times per user (``per_user_once: false``): a retry of
    the same POST (same ``Idempotency-Key``) answers the first redemption again and grants
    nothing more; a new key redeems again; a reused key with another body is 409."""
    uid, headers = api.user("wes")
    r = api.client.post(
        f"{V1}/admin/promo-codes",
        json={"code": "AGAIN", "bonus_ucr": 2 * CREDIT, "per_user_once": False},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    url = f"{V1}/users/{uid}/promo-redemptions"
    first = api.client.post(
        url, json={"code": "again"}, headers={**headers, "Idempotency-Key": "redeem-1"}
    )
    assert first.status_code == 201, first.text
    assert first.headers["Idempotency-Hit"] == "false"
    retry = api.client.post(
        url, json={"code": "again"}, headers={**headers, "Idempotency-Key": "redeem-1"}
    )
    assert retry.status_code == 201 and retry.headers["Idempotency-Hit"] == "true"
    assert retry.json() == first.json()
    assert balance(api, uid) == 2 * CREDIT
    api.rejects(
        "POST",
        url,
        409,
        "idempotency_key_reused",
        json={"code": "LAUNCH"},
        headers={**headers, "Idempotency-Key": "redeem-1"},
    )
    second = api.client.post(
        url, json={"code": "again"}, headers={**headers, "Idempotency-Key": "redeem-2"}
    )
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    assert balance(api, uid) == 4 * CREDIT
    listed = api.client.get(f"{V1}/admin/promo-codes", headers=api.admin).json()["items"]
    assert [(p["code"], p["uses"]) for p in listed] == [("AGAIN", 2)]
    assert promotions_spent(api) == 4 * CREDIT
    api.rejects(
        "POST", url, 422, json={"code": "again"}, headers={**headers, "Idempotency-Key": "a\tb"}
    )
