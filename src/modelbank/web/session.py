"""Dashboard sessions, CSRF and the signed-in viewer (issue "Web dashboard").

**Session cookie** ``mb_session`` (``Path=/app``, HttpOnly, SameSite=Strict, Secure when the
request came over https): a token sealed with the server's secret key (the
:class:`~modelbank.secrets.SecretBox` that also encrypts webhook secrets; Fernet:
AES-128-CBC, then HMAC-SHA256 over the ciphertext with the other half of that key) holding
``{"k": API key id, "d": the key's stored SHA-256 digest, "e": expiry, unix seconds,
"s": session id}``; never the key itself. Every request re-authenticates the key through
:func:`modelbank.auth.service.authenticate_digest` and checks that the session row
(:mod:`modelbank.auth.sessions`) is live, in one read transaction: revoking the key ends its
sessions at once, signing out ends that session on the server (a copied cookie stops
working too), and a session ends :data:`SESSION_TTL_S` after sign-in.

**CSRF**: every form carries ``csrf_token`` = HMAC-SHA256 keyed with the session token
(:func:`csrf_token`), compared in constant time on every POST (403 otherwise); the sign-in
form, before any session, uses a random pre-session cookie ``mb_presession`` the same way.
A POST whose ``Origin`` (or, without one, ``Referer``) names another host is refused (403)
before anything else. SameSite=Strict already keeps the cookies off cross-site requests;
the token and origin checks are the second and third locks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from modelbank.api.deps import Database
from modelbank.audit import context as audit_context
from modelbank.auth import service as auth
from modelbank.auth import sessions as web_sessions
from modelbank.auth.errors import Forbidden, Unauthenticated
from modelbank.auth.service import Principal
from modelbank.secrets import SecretBox, SecretUndecryptable

SESSION_COOKIE = "mb_session"
PRESESSION_COOKIE = "mb_presession"
FLASH_COOKIE = "mb_flash"
COOKIE_PATH = "/app"
SESSION_TTL_S = 8 * 3600
"""A session lasts 8 hours from sign-in (a working day), whatever the activity."""
PRESESSION_TTL_S = 3600
"""How long a sign-in form stays submittable."""
FLASH_TTL_S = 120
"""A one-shot message survives one redirect; a stale one is dropped after this."""
CSRF_FIELD = "csrf_token"
FORM_KEY_FIELD = "form_key"
"""The hidden one-time nonce of a form that moves credits (:func:`new_form_key`)."""
_CSRF_LABEL = b"modelbank/web/csrf/v1"


class SignInRequired(Exception):
    """No valid session: the page redirects to the sign-in form (``expired``: there was a
    cookie, but its session ended or its key was revoked)."""

    def __init__(self, *, expired: bool = False) -> None:
        super().__init__("sign in required")
        self.expired = expired


class CsrfRejected(Forbidden):
    """A POST without the right CSRF token, or from another origin."""

    code = "csrf_rejected"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a session token says: the API key (id and stored digest), the expiry and the
    server-side session's id."""

    key_id: int
    key_digest: str
    expires_at: int
    session_id: str


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in caller of a page: the key's principal and the CSRF token its forms
    carry."""

    principal: Principal
    csrf: str
    session_id: str

    @property
    def user_id(self) -> int | None:
        return self.principal.user_id

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def csrf_token(seed: str) -> str:
    """The CSRF token of a session (or pre-session) token: hex HMAC-SHA256 keyed with it.
    Unguessable without the HttpOnly cookie; the same for the whole session."""
    return hmac.new(seed.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


class Sessions:
    """Seals and opens session tokens and one-shot flash messages with ``box``."""

    def __init__(self, box: SecretBox, *, ttl_s: int = SESSION_TTL_S) -> None:
        self.box = box
        self.ttl_s = ttl_s

    def issue(
        self, key_id: int, key_digest: str, session_id: str, *, now: float | None = None
    ) -> str:
        """A session token for the key ``key_id`` (its stored digest) and the server-side
        session ``session_id``, valid ``ttl_s``."""
        expires = int(now if now is not None else time.time()) + self.ttl_s
        claims = {"k": key_id, "d": key_digest, "e": expires, "s": session_id}
        return self.box.encrypt(json.dumps(claims))

    def open(self, token: str, *, now: float | None = None) -> Claims | None:
        """The claims of a token made by :meth:`issue`; None when it was altered, sealed
        with another key, malformed or expired."""
        try:
            data = json.loads(self.box.decrypt(token))
            claims = Claims(int(data["k"]), str(data["d"]), int(data["e"]), str(data["s"]))
        except (SecretUndecryptable, ValueError, TypeError, KeyError):
            return None
        if claims.expires_at <= (now if now is not None else time.time()):
            return None
        return claims

    def seal_flash(self, kind: str, text: str) -> str:
        """A flash message (``kind`` ``ok`` or ``error``) as a cookie value."""
        payload = {"kind": kind, "text": text[:500], "t": int(time.time())}
        return self.box.encrypt(json.dumps(payload))

    def open_flash(self, value: str) -> dict[str, str] | None:
        """The flash message in a cookie value, or None (altered, stale, malformed)."""
        try:
            data = json.loads(self.box.decrypt(value))
            if int(data["t"]) + FLASH_TTL_S < time.time():
                return None
            return {"kind": str(data["kind"]), "text": str(data["text"])}
        except (SecretUndecryptable, ValueError, TypeError, KeyError):
            return None


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int
) -> None:
    """Set a dashboard cookie: Path=/app, HttpOnly, SameSite=Strict, Secure over https."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    """Delete a dashboard cookie (same attributes as when set)."""
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def new_form_key() -> str:
    """A fresh one-time form nonce (128 random bits, URL-safe): rendered into each form that
    moves credits, so that a second submission of the same page is recognised
    (:func:`modelbank.web.forms.submit_once`)."""
    return secrets.token_urlsafe(16)


def new_presession() -> str:
    """A random pre-session value (256 bits) for the sign-in form's CSRF token."""
    return secrets.token_urlsafe(32)


def same_origin(request: Request) -> bool:
    """False when the request's ``Origin`` (or, without one, ``Referer``) names another
    host than the one it was sent to; True when neither header is present. Hosts are
    compared (with port), not schemes: behind a TLS-terminating proxy the app may see
    http."""
    origin = request.headers.get("origin")
    if origin is None:
        origin = request.headers.get("referer")
        if origin is None:
            return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.url.netloc.lower()


def check_origin(request: Request) -> None:
    """Raise :class:`CsrfRejected` for a cross-origin POST."""
    if not same_origin(request):
        raise CsrfRejected("this form was sent from another site")


def check_token(expected: str, given: Any) -> None:
    """Raise :class:`CsrfRejected` unless ``given`` (the form field) equals ``expected``."""
    if not isinstance(given, str) or not hmac.compare_digest(given, expected):
        raise CsrfRejected("the form's security token is missing or wrong: reload the page")


@dataclass
class WebState:
    """What the dashboard's handlers share: the API's database and the session sealer."""

    db: Database
    sessions: Sessions


def state_of(request: Request) -> WebState:
    """The dashboard's :class:`WebState` (on the dashboard sub-application)."""
    found: WebState = request.app.state.web
    return found


def _viewer(request: Request) -> Viewer:
    web = state_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired()
    claims = web.sessions.open(token)
    if claims is None:
        raise SignInRequired(expired=True)
    try:
        with web.db.read() as session:
            who = auth.authenticate_digest(session, claims.key_id, claims.key_digest)
            live = web_sessions.is_live(session, claims.session_id, claims.key_id)
    except Unauthenticated:
        raise SignInRequired(expired=True) from None
    if not live:  # signed out (maybe in another browser holding a copy of the cookie)
        raise SignInRequired(expired=True)
    audit_context.identify(who.role.value, key_id=who.key_id, user_id=who.user_id)
    return Viewer(who, csrf_token(token), claims.session_id)


def signed_in(request: Request) -> Viewer:
    """Dependency of every page: the signed-in viewer (the key re-checked in the
    database). Raises :class:`SignInRequired`."""
    return _viewer(request)


async def signed_in_post(request: Request) -> Viewer:
    """Dependency of every state-changing form: same-origin check (403), the viewer
    (:class:`SignInRequired`), then the form's CSRF token (403)."""
    check_origin(request)
    viewer = await run_in_threadpool(_viewer, request)
    form = await request.form()
    check_token(viewer.csrf, form.get(CSRF_FIELD))
    return viewer
