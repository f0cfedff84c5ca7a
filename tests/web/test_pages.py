"""The dashboard over HTTP (no browser): sign-in and its cookie, sign-out, CSRF on every
form, the API's scoping on every page, revocation. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.routing import Mount

from modelbank.api import create_app
from modelbank.config import load_settings
from modelbank.db.engine import make_engine
from modelbank.wallets.models import purchases_table
from tests.api.conftest import TEST_SECRET_KEY, Api
from tests.web.conftest import (
    browser,
    csrf_of,
    form_key_of,
    key_of,
    set_cookies,
    sign_in,
    signed_in,
)


def _web_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the dashboard sub-application."""
    for route in routes:
        if isinstance(route, Mount) and route.path == "/app":
            yield from _web_routes(route.routes, "/app")
        elif prefix and isinstance(route, APIRoute):
            for method in route.methods:
                yield method, prefix + route.path
        inner = getattr(route, "original_router", None)
        if prefix and inner is not None:
            context = getattr(route, "include_context", None)
            yield from _web_routes(inner.routes, prefix + getattr(context, "prefix", ""))


APP = create_app(
    load_settings(database_url="sqlite://", secret_key=TEST_SECRET_KEY),
    engine=make_engine("sqlite://"),
)
"""The app on an empty in-memory database: its route table, and static files."""
POST_ROUTES = sorted({path for method, path in _web_routes(APP.routes) if method == "POST"})


def test_the_walk_finds_the_forms() -> None:
    assert "/app/sign-in" in POST_ROUTES and "/app/admin/pricing/recalculate" in POST_ROUTES
    assert len(POST_ROUTES) >= 10, POST_ROUTES


def _purchases(api: Api) -> int:
    with api.db.tx() as session:
        return int(session.execute(select(func.count()).select_from(purchases_table)).scalar())


def test_sign_in_sets_a_strict_httponly_cookie_without_the_key(api: Api) -> None:
    uid, headers = api.user("alice", credits_ucr=3_000_000)
    client = browser(api)
    r = sign_in(client, key_of(headers))
    assert r.status_code == 303 and r.headers["location"] == f"/app/users/{uid}/wallet"
    cookie = set_cookies(r)["mb_session"]
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes
    assert "path=/app" in attributes and "secure" not in attributes  # plain http here
    assert key_of(headers) not in cookie
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and "Wallet" in page.text and "3.00" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_refused_sign_ins_re_render_the_form_without_a_cookie(api: Api) -> None:
    _, headers = api.user("alice")
    client = browser(api)
    r = sign_in(client, "mb_u_not-a-real-key")
    assert r.status_code == 400
    assert "not valid" in r.text and 'name="api_key"' in r.text
    assert "mb_session" not in set_cookies(r)
    assert client.get("/app/", follow_redirects=False).headers["location"] == "/app/sign-in"
    r = sign_in(client, key_of(api.service))
    assert r.status_code == 403 and "Service keys" in r.text
    assert "mb_session" not in set_cookies(r)
    client.cookies.clear()  # no sign-in form open: its token cannot be checked
    r = client.post("/app/sign-in", data={"api_key": key_of(headers)}, follow_redirects=False)
    assert r.status_code == 403 and "mb_session" not in set_cookies(r)
    https = browser(api)
    https.base_url = https.base_url.copy_with(scheme="https")
    r = sign_in(https, key_of(headers))
    assert r.status_code == 303
    assert "secure" in [p.strip().lower() for p in set_cookies(r)["mb_session"].split(";")]


def test_sign_out_clears_the_cookie(api: Api) -> None:
    uid, headers = api.user("alice")
    client = signed_in(api, headers)
    page = client.get(f"/app/users/{uid}/wallet")
    r = client.post(
        "/app/sign-out", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/app/sign-in"
    assert "max-age=0" in set_cookies(r)["mb_session"].lower()
    r = client.get(f"/app/users/{uid}/wallet", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/app/sign-in?next=/app/users/{uid}/wallet"


def test_next_goes_back_to_the_page_asked_for_but_never_off_site(api: Api) -> None:
    uid, headers = api.user("alice")
    client = browser(api)
    for target, expected in (
        (f"/app/users/{uid}/models", f"/app/users/{uid}/models"),
        ("//evil.example/app/", f"/app/users/{uid}/wallet"),
        ("https://evil.example/", f"/app/users/{uid}/wallet"),
    ):
        form = client.get("/app/sign-in", params={"next": target})
        r = client.post(
            "/app/sign-in",
            data={"csrf_token": csrf_of(form.text), "api_key": key_of(headers), "next": target},
            follow_redirects=False,
        )
        assert r.headers["location"] == expected
        client.cookies.clear()


@pytest.mark.parametrize("token", [None, "wrong"])
def test_posts_without_the_right_csrf_token_are_403_and_change_nothing(
    api: Api, token: str | None
) -> None:
    uid, headers = api.user("alice", credits_ucr=50_000_000)
    premium = api.model("gold", is_premium=True, access_price_ucr=1_000_000)
    client = signed_in(api, api.admin)
    package_id = api.client.get("/api/v1/packages", headers=headers).json()["items"][0]["id"]
    before, purchases = api.ledger_state(), _purchases(api)
    data = {"package_id": str(package_id)} | ({} if token is None else {"csrf_token": token})
    for path in POST_ROUTES:
        url = path.format(
            user_id=uid,
            model_id=premium["id"],
            purchase_id=1,
            package_id=package_id,
            payout_id=1,
            resource_id=1,
            subscription_id=1,
            plan_id=1,
            promo_id=1,
            key_id=1,
        )
        r = client.post(url, data=data, follow_redirects=False)
        assert r.status_code == 403, (url, r.status_code, r.text[:300])
    assert api.ledger_state() == before and _purchases(api) == purchases
    assert client.get("/app/admin/pricing").status_code == 200  # still signed in


def test_cross_origin_posts_are_refused_even_with_the_token(api: Api) -> None:
    uid, headers = api.user("alice")
    client = signed_in(api, headers)
    token = csrf_of(client.get(f"/app/users/{uid}/wallet").text)
    package_id = api.client.get("/api/v1/packages", headers=headers).json()["items"][0]["id"]
    for origin_header in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
    ):
        r = client.post(
            f"/app/users/{uid}/purchases",
            data={"csrf_token": token, "package_id": str(package_id)},
            headers=origin_header,
            follow_redirects=False,
        )
        assert r.status_code == 403, origin_header
    assert _purchases(api) == 0
    r = client.post(
        f"/app/users/{uid}/purchases",
        data={"csrf_token": token, "form_key": "k1", "package_id": str(package_id)},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and _purchases(api) == 1


def test_a_user_sees_only_their_own_pages(api: Api) -> None:
    a, a_headers = api.user("alice", credits_ucr=2_000_000)
    b, _ = api.user("bob", credits_ucr=2_000_000)
    alice = signed_in(api, a_headers)
    for page in ("wallet", "models", "statement.csv"):
        assert alice.get(f"/app/users/{a}/{page}").status_code == 200, page
        r = alice.get(f"/app/users/{b}/{page}")
        assert r.status_code == 404, page
        assert "bob" not in r.text
    for page in ("/app/admin/pricing", "/app/admin/purchases"):
        assert alice.get(page).status_code == 403
    token = csrf_of(alice.get(f"/app/users/{a}/wallet").text)
    before = api.ledger_state()
    r = alice.post(
        "/app/admin/pricing/recalculate",
        data={"csrf_token": token, "scope": "all"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    r = alice.post(
        f"/app/users/{b}/purchases",
        data={"csrf_token": token, "package_id": "1"},
        follow_redirects=False,
    )
    assert r.status_code == 404
    assert api.ledger_state() == before and _purchases(api) == 0
    admin = signed_in(api, api.admin)
    assert admin.get(f"/app/users/{b}/wallet").status_code == 200
    assert admin.get("/app/users/999999/wallet").status_code == 404


def test_a_revoked_key_is_signed_out_at_once(api: Api) -> None:
    uid, _ = api.user("alice")
    r = api.client.post(f"/api/v1/users/{uid}/keys", json={}, headers=api.admin)
    key_id, key = r.json()["id"], r.json()["key"]
    client = browser(api)
    assert sign_in(client, key).status_code == 303
    assert client.get(f"/app/users/{uid}/wallet").status_code == 200
    assert api.client.delete(f"/api/v1/admin/keys/{key_id}", headers=api.admin).status_code == 204
    r = client.get(f"/app/users/{uid}/wallet", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/app/sign-in?")
    assert "expired=1" in r.headers["location"]
    assert "max-age=0" in set_cookies(r)["mb_session"].lower()


def test_a_tampered_or_foreign_cookie_is_no_session(api: Api) -> None:
    uid, headers = api.user("alice")
    client = signed_in(api, headers)
    real = client.cookies.get("mb_session", path="/app")
    assert real
    for value in (real[:-6] + "AAAAAA", "garbage", ""):
        other = browser(api)
        other.cookies.set("mb_session", value, path="/app")
        r = other.get(f"/app/users/{uid}/wallet", follow_redirects=False)
        assert r.status_code == 303, value


def test_form_errors_come_back_as_a_message(api: Api) -> None:
    uid, headers = api.user("alice", credits_ucr=1_000_000)
    gold = api.model("gold", is_premium=True, access_price_ucr=5_000_000)
    client = signed_in(api, headers)
    page = client.get(f"/app/users/{uid}/models")
    assert "gold" in page.text
    before = api.ledger_state()
    r = client.post(
        f"/app/users/{uid}/models/{gold['id']}/access",
        data={"csrf_token": csrf_of(page.text), "form_key": form_key_of(page.text)},
        headers={"Referer": f"http://testserver/app/users/{uid}/models"},
    )
    assert r.status_code == 200 and "flash-error" in r.text
    assert api.ledger_state() == before
    r = client.get(f"/app/users/{uid}/wallet", params={"from": "yesterday"})
    assert r.status_code == 422 and "YYYY-MM-DD" in r.text


def test_static_assets_are_served_with_long_cache_headers() -> None:
    client = TestClient(APP)
    for name, kind in (
        ("plotly.min.js", "text/javascript"),
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
    ):
        r = client.get(f"/app/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert "max-age=31536000" in r.headers["cache-control"]
    assert client.get("/app/static/../app.py").status_code == 404
    assert client.get("/app/static/secret.key").status_code == 404
    assert client.get("/app/nowhere").status_code == 404
