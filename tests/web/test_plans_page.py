"""The plans page and the wallet's subscription status (issue 13), through the forms (CSRF
token and one-time form key): subscribe (manual), see the status on the wallet page, redeem
a promo code (once), cancel; another user's plans page is a 404. SQLite and PostgreSQL."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.api.conftest import Api
from tests.web.conftest import csrf_of, form_key_of, signed_in

CREDIT = 1_000_000


def _post(client: TestClient, url: str, page: str, **data: str) -> str:
    html = client.get(page).text
    r = client.post(
        url,
        data={"csrf_token": csrf_of(html), "form_key": form_key_of(html), **data},
        headers={"Referer": f"http://testserver{page}"},
    )
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return r.text


def _flash(html: str) -> str:
    found = re.search(r'class="flash flash-(?:ok|error)"[^>]*>\s*([^<]+?)\s*</div>', html)
    assert found, "no flash message on the page"
    return found.group(1).replace("&#39;", "'")


def test_subscribe_redeem_and_cancel_through_the_pages(api: Api) -> None:
    user_id, headers = api.user("paula")
    other_id, _ = api.user("otto")
    r = api.client.post(
        "/api/v1/admin/plans",
        json={"slug": "solo", "name": "Solo", "price_uusd": 4_990_000, "credits_ucr": 50 * CREDIT},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    plan_id = r.json()["id"]
    r = api.client.post(
        "/api/v1/admin/promo-codes",
        json={"code": "HELLO", "bonus_ucr": 2 * CREDIT},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    client = signed_in(api, headers)
    page = f"/app/users/{user_id}/plans"
    html = client.get(page).text
    assert "Solo" in html and 'id="referral-code"' in html and "No subscription yet" in html
    assert client.get(f"/app/users/{other_id}/plans").status_code == 404

    html = _post(client, f"/app/users/{user_id}/subscriptions", page, plan_id=str(plan_id))
    assert "started — pending" in _flash(html)
    subs = api.client.get(f"/api/v1/users/{user_id}/subscriptions", headers=headers).json()
    (sub,) = subs["items"]
    r = api.client.post(
        f"/api/v1/admin/subscriptions/{sub['id']}/periods",
        headers={**api.admin, "Idempotency-Key": "web-p1"},
    )
    assert r.status_code == 201, r.text
    wallet = client.get(f"/app/users/{user_id}/wallet").text
    status = re.search(r'id="wallet-subscription">(.*?)</p>', wallet, re.S)
    assert status and "Solo" in status.group(1) and "active" in status.group(1)

    html = _post(client, f"/app/users/{user_id}/promo-redemptions", page, code="hello")
    assert _flash(html) == "HELLO redeemed: 2.00 bonus credits added."
    html = _post(client, f"/app/users/{user_id}/promo-redemptions", page, code="HELLO")
    assert _flash(html) == "You already redeemed HELLO (2.00 credits)."
    balance = api.client.get(f"/api/v1/users/{user_id}/wallet", headers=headers).json()
    assert balance["balance_ucr"] == 52 * CREDIT

    html = _post(client, f"/app/users/{user_id}/subscriptions/{sub['id']}/cancel", page)
    assert _flash(html) == f"Subscription #{sub['id']} is cancelled."


def test_admin_creates_plans_and_codes_and_confirms_manual_months(api: Api) -> None:
    user_id, headers = api.user("sam")
    admin = signed_in(api, api.admin)
    page = "/app/admin/offers"
    html = _post(
        admin,
        "/app/admin/plans",
        page,
        slug="team",
        name="Team",
        price_usd="19.99",
        credits="250",
        rollover_percent="12.5",
        bonus="25",
    )
    assert _flash(html) == "Plan Team created: 250.00 credits."
    (plan,) = api.client.get("/api/v1/plans", headers=headers).json()["items"]
    assert (plan["price_uusd"], plan["credits_ucr"], plan["rollover_bps"]) == (
        19_990_000,
        250 * CREDIT,
        1_250,
    )
    assert plan["first_period_bonus_ucr"] == 25 * CREDIT
    html = _post(admin, "/app/admin/promo-codes", page, code="team10", bonus="10", use_limit="5")
    assert _flash(html) == "Promo code TEAM10 created."
    r = api.client.post(
        f"/api/v1/users/{user_id}/subscriptions",
        json={"plan_id": plan["id"], "provider": "manual"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    html = admin.get(page).text
    assert f'data-subscription-id="{r.json()["id"]}"' in html
    html = _post(admin, f"/app/admin/subscriptions/{r.json()['id']}/confirm", page)
    assert "275.00 credits granted" in _flash(html)
    wallet = api.client.get(f"/api/v1/users/{user_id}/wallet", headers=headers).json()
    assert wallet["balance_ucr"] == 275 * CREDIT
    user = signed_in(api, headers)
    assert user.get(page).status_code == 403
