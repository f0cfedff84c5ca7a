"""API keys on the wallet page (issue 13): a user creates a key with a spend limit (the
secret shown once), sees its limit and what is left, and revokes it; CSRF and ownership are
enforced as on every other form."""

from __future__ import annotations

import re

from tests.api.conftest import Api, bearer
from tests.web.conftest import csrf_of, signed_in

SECRET = re.compile(r'<code id="new-key" class="secret">(mb_u_[^<]+)</code>')


def test_create_see_and_revoke_a_limited_key(api: Api) -> None:
    uid, headers = api.user("alice", credits_ucr=5_000_000)
    api.model("m")
    client = signed_in(api, headers)
    page = client.get(f"/app/users/{uid}/wallet")
    assert 'id="keys-h"' in page.text
    token = csrf_of(page.text)
    r = client.post(
        f"/app/users/{uid}/keys",
        data={"csrf_token": token, "name": "my bot", "limit": "0.5", "limit_period": "day"},
    )
    assert r.status_code == 201, r.text
    found = SECRET.search(r.text)
    assert found, r.text
    secret = found.group(1)
    assert "0.5" in r.text and "per day" in r.text
    # The key works, with its limit: 500,000 µcr a day.
    listed = api.client.get(f"/api/v1/users/{uid}/keys", headers=headers).json()["items"]
    (mine,) = [k for k in listed if k["name"] == "my bot"]
    assert (mine["limit"]["limit_ucr"], mine["limit"]["period"]) == (500_000, "day")
    used = api.charge(uid, "m", key="u1", headers=bearer(secret), input_tokens=100_000)
    assert used.status_code == 201, used.text
    # The wallet page shows it with what is left, and never the secret.
    page = client.get(f"/app/users/{uid}/wallet")
    assert "my bot" in page.text and secret not in page.text
    row = page.text[page.text.index(f"#{mine['id']}") :].split("</tr>")[0]
    assert "0.5" in row and "0.1" in row and "0.4" in row  # limit, spent, left (credits)
    r = client.post(
        f"/app/users/{uid}/keys/{mine['id']}/revoke",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert client.get(r.headers["location"]).text.count("revoked") >= 1
    assert api.client.get(f"/api/v1/users/{uid}/wallet", headers=bearer(secret)).status_code == 401


def test_key_forms_need_the_token_and_the_owner(api: Api) -> None:
    a, a_headers = api.user("alice")
    b, b_headers = api.user("bob")
    bobs = api.client.post(f"/api/v1/users/{b}/keys", json={}, headers=b_headers).json()
    alice = signed_in(api, a_headers)
    token = csrf_of(alice.get(f"/app/users/{a}/wallet").text)
    before = api.client.get(f"/api/v1/users/{a}/keys", headers=a_headers).json()
    r = alice.post(f"/app/users/{a}/keys", data={"name": "x"}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token
    assert api.client.get(f"/api/v1/users/{a}/keys", headers=a_headers).json() == before
    r = alice.post(f"/app/users/{b}/keys", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 404
    r = alice.post(
        f"/app/users/{b}/keys/{bobs['id']}/revoke",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 404
    r = alice.post(
        f"/app/users/{a}/keys/{bobs['id']}/revoke",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 404
    assert (
        api.client.get(f"/api/v1/users/{b}/wallet", headers=bearer(bobs["key"])).status_code == 200
    )
    r = alice.post(
        f"/app/users/{a}/keys",
        data={"csrf_token": token, "limit": "lots"},
        follow_redirects=False,
    )
    assert r.status_code == 303  # back to the page with the error shown
    assert api.client.get(f"/api/v1/users/{a}/keys", headers=a_headers).json() == before


def test_a_session_of_a_limited_key_cannot_manage_keys(api: Api) -> None:
    a, a_headers = api.user("alice")
    limited = api.client.post(
        f"/api/v1/users/{a}/keys", json={"limit_ucr": 10}, headers=a_headers
    ).json()
    client = signed_in(api, bearer(limited["key"]))
    page = client.get(f"/app/users/{a}/wallet")
    assert page.status_code == 200 and "Create key" not in page.text
    r = client.post(
        f"/app/users/{a}/keys", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert r.status_code == 403


def test_a_session_of_a_limited_key_cannot_buy_premium_access(api: Api) -> None:
    a, a_headers = api.user("alice", credits_ucr=5_000_000)
    gold = api.model("gold", is_premium=True, access_price_ucr=4_000_000)
    limited = api.client.post(
        f"/api/v1/users/{a}/keys", json={"limit_ucr": 10}, headers=a_headers
    ).json()
    client = signed_in(api, bearer(limited["key"]))
    page = client.get(f"/app/users/{a}/models")
    r = client.post(
        f"/app/users/{a}/models/{gold['id']}/access",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 403
    wallet = api.client.get(f"/api/v1/users/{a}/wallet", headers=a_headers).json()
    assert wallet["balance_ucr"] == 5_000_000


def test_change_a_keys_limit_on_the_wallet_page(api: Api) -> None:
    uid, headers = api.user("alice", credits_ucr=5_000_000)
    made = api.client.post(
        f"/api/v1/users/{uid}/keys", json={"limit_ucr": 500_000}, headers=headers
    ).json()
    client = signed_in(api, headers)
    page = client.get(f"/app/users/{uid}/wallet")
    assert f'action="/app/users/{uid}/keys/{made["id"]}/limit"' in page.text
    token = csrf_of(page.text)
    url = f"/app/users/{uid}/keys/{made['id']}/limit"

    def limit() -> object:
        listed = api.client.get(f"/api/v1/users/{uid}/keys", headers=headers).json()["items"]
        (mine,) = [k for k in listed if k["id"] == made["id"]]
        found = mine["limit"]
        return None if found is None else (found["limit_ucr"], found["period"])

    data = {"csrf_token": token, "limit": "lots", "limit_period": "week"}
    r = client.post(url, data=data, follow_redirects=False)
    assert r.status_code == 303 and limit() == (500_000, "never")  # bad amount: unchanged
    data["limit"] = "1,234.5"
    r = client.post(url, data=data, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert limit() == (1_234_500_000, "week")
    page = client.get(r.headers["location"])
    assert f"Key #{made['id']} has a new limit" in page.text
    assert 'value="1234.50"' in page.text
    r = client.post(url, data={"csrf_token": token, "limit": ""}, follow_redirects=False)
    assert r.status_code == 303 and limit() is None
    # Without the token, or for another user's key: refused, unchanged.
    assert client.post(url, data={"limit": "1"}, follow_redirects=False).status_code == 403
    b, b_headers = api.user("bob")
    bobs = api.client.post(f"/api/v1/users/{b}/keys", json={}, headers=b_headers).json()
    r = client.post(
        f"/app/users/{uid}/keys/{bobs['id']}/limit",
        data={"csrf_token": token, "limit": "1"},
        follow_redirects=False,
    )
    assert r.status_code == 404 and limit() is None


def test_a_session_of_a_limited_key_cannot_request_payouts_or_list(api: Api) -> None:
    a, a_headers = api.user("alice")
    limited = api.client.post(
        f"/api/v1/users/{a}/keys", json={"limit_ucr": 10}, headers=a_headers
    ).json()
    client = signed_in(api, bearer(limited["key"]))
    token = csrf_of(client.get(f"/app/users/{a}/wallet").text)
    for path, data in (
        (f"/app/users/{a}/payouts", {"amount": "100"}),
        (f"/app/users/{a}/marketplace/listings", {"kind": "stake"}),
        (f"/app/users/{a}/marketplace/listings/price", {"listing_id": "1", "price": "1"}),
    ):
        r = client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    summary = api.client.get(f"/api/v1/users/{a}/payouts", headers=a_headers).json()
    assert summary["items"] == []
