"""Dashboard test helpers: signing a test client in through the sign-in form, reading the
CSRF token and form key of a page, and the `api` fixture (the app on SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import Api, api  # noqa: F401  (the fixture, re-exported here)

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_FORM_KEY = re.compile(r'name="form_key" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token in a page's first form."""
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def form_key_of(html: str) -> str:
    """The one-time form key of a page's first credit-moving form."""
    found = _FORM_KEY.search(html)
    assert found, "no form_key field on the page"
    return found.group(1)


def browser(under_test: Api) -> TestClient:
    """A fresh client (its own cookie jar) on the app under test."""
    return TestClient(under_test.client.app, raise_server_exceptions=True)


def sign_in(client: TestClient, key: str) -> Any:
    """Sign in through the form; return the redirect response (303 on success)."""
    form = client.get("/app/sign-in")
    assert form.status_code == 200, form.text
    return client.post(
        "/app/sign-in",
        data={"csrf_token": csrf_of(form.text), "api_key": key, "next": ""},
        follow_redirects=False,
    )


def key_of(headers: dict[str, str]) -> str:
    """The API key in ``Authorization: Bearer <key>`` headers."""
    return headers["Authorization"].removeprefix("Bearer ")


def signed_in(under_test: Api, headers: dict[str, str]) -> TestClient:
    """A client signed in with the key in ``headers``."""
    client = browser(under_test)
    r = sign_in(client, key_of(headers))
    assert r.status_code == 303, r.text
    return client


def set_cookies(response: Any) -> dict[str, str]:
    """The response's Set-Cookie headers by cookie name."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        found[header.split("=", 1)[0]] = header
    return found
