"""The wallet page's auto top-up form (issue 13): shown, saved through a CSRF-protected form
once per form key, refused for another user's wallet and without the token."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.web.conftest import csrf_of, form_key_of, signed_in


def test_auto_topup_form_saves_and_shows(api: Api) -> None:
    uid, headers = api.user("alice", credits_ucr=100_000_000)
    other, _ = api.user("bob")
    client = signed_in(api, headers)
    page = client.get(f"/app/users/{uid}/wallet")
    assert page.status_code == 200 and "Auto top-up" in page.text and "Off." in page.text
    package_id = api.client.get("/api/v1/packages", headers=headers).json()["items"][0]["id"]
    form = {
        "csrf_token": csrf_of(page.text),
        "form_key": form_key_of(page.text),
        "enabled": "1",
        "threshold": "25.5",
        "package_id": str(package_id),
        "monthly_cap_count": "2",
        "monthly_cap_usd": "12.50",
    }
    r = client.post(f"/app/users/{uid}/auto-topup", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    state = api.client.get(f"/api/v1/users/{uid}/auto-topup", headers=headers).json()
    assert state["enabled"] is True and state["threshold_ucr"] == 25_500_000
    assert state["monthly_cap_count"] == 2 and state["monthly_cap_uusd"] == 12_500_000
    assert state["package_id"] == package_id
    again = client.get(f"/app/users/{uid}/wallet").text
    assert "is bought when your available balance falls below 25.50" in again

    # the token is required; another user's wallet does not exist for alice
    r = client.post(
        f"/app/users/{uid}/auto-topup",
        data={k: v for k, v in form.items() if k != "csrf_token"} | {"form_key": "k2"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    r = client.post(
        f"/app/users/{other}/auto-topup",
        data=form | {"form_key": "k3"},
        follow_redirects=False,
    )
    assert r.status_code == 404
    theirs = api.client.get(f"/api/v1/users/{other}/auto-topup", headers=api.admin).json()
    assert theirs["enabled"] is False
