"""Server-side sessions (issue 16 D11): signing out ends the session on the server, so a
copy of the cookie taken before sign-out no longer opens a page; other sessions of the same
key live on."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.web.conftest import browser, csrf_of, signed_in


def test_a_copied_cookie_stops_working_after_sign_out(api: Api) -> None:
    uid, headers = api.user("alice")
    client = signed_in(api, headers)
    other = signed_in(api, headers)  # a second browser of the same user
    stolen = client.cookies.get("mb_session", path="/app")
    assert stolen
    page = client.get(f"/app/users/{uid}/wallet")
    assert page.status_code == 200
    r = client.post(
        "/app/sign-out", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert r.status_code == 303
    thief = browser(api)
    thief.cookies.set("mb_session", stolen, path="/app")
    r = thief.get(f"/app/users/{uid}/wallet", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/app/sign-in")
    assert other.get(f"/app/users/{uid}/wallet").status_code == 200
