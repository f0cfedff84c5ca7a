"""Sign-in with an API key, sign-out, and where each role lands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from modelbank.auth import service as auth
from modelbank.auth import sessions as web_sessions
from modelbank.auth.errors import Unauthenticated
from modelbank.auth.service import Principal, Role
from modelbank.web.render import redirect, render, safe_next
from modelbank.web.session import (
    CSRF_FIELD,
    PRESESSION_COOKIE,
    PRESESSION_TTL_S,
    SESSION_COOKIE,
    CsrfRejected,
    SignInRequired,
    Viewer,
    check_origin,
    check_token,
    clear_cookie,
    csrf_token,
    new_presession,
    set_cookie,
    signed_in,
    signed_in_post,
    state_of,
)

router = APIRouter(include_in_schema=False)

MAX_KEY_LENGTH = 200
"""Longer than any key modelbank issues (~50 characters); longer input is not a key."""


def landing(viewer: Viewer | Principal) -> str:
    """The first page of a signed-in key: an admin's platform overview, a user's wallet."""
    who = viewer.principal if isinstance(viewer, Viewer) else viewer
    if who.is_admin:
        return "/app/admin/platform"
    return f"/app/users/{who.user_id}/wallet"


def _sign_in_form(
    request: Request,
    *,
    next_url: str,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    presession = request.cookies.get(PRESESSION_COOKIE) or new_presession()
    response = render(
        request,
        "sign_in.html",
        None,
        {
            "form_csrf": csrf_token(presession),
            "next_url": next_url,
            "error": error,
            "notice": notice,
        },
        status_code=status_code,
    )
    set_cookie(response, request, PRESESSION_COOKIE, presession, max_age=PRESESSION_TTL_S)
    return response


@router.get("/sign-in")
def sign_in_page(
    request: Request,
    next_url: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
    expired: bool = False,
) -> Response:
    """The sign-in form (a signed-in browser goes on to its landing page)."""
    try:
        viewer = signed_in(request)
    except SignInRequired:
        viewer = None
    if viewer is not None and viewer.principal.role is not Role.SERVICE:
        return redirect(safe_next(next_url, landing(viewer)))
    notice = "Your session ended: sign in again." if expired else None
    return _sign_in_form(request, next_url=safe_next(next_url, ""), notice=notice)


def _authenticate(request: Request, key: str) -> Principal:
    with state_of(request).db.read() as session:
        return auth.authenticate(session, key)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Exchange an API key for a session cookie (the key itself is not stored in it)."""
    check_origin(request)
    form = await request.form()
    next_url = safe_next(str(form.get("next") or ""), "")
    presession = request.cookies.get(PRESESSION_COOKIE)
    try:
        if not presession:
            raise CsrfRejected("no sign-in form was open")
        check_token(csrf_token(presession), form.get(CSRF_FIELD))
    except CsrfRejected:
        return _sign_in_form(
            request,
            next_url=next_url,
            error="This sign-in form expired. Please try again.",
            status_code=403,
        )
    key = str(form.get("api_key") or "").strip()
    try:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise Unauthenticated("no key")
        who = await run_in_threadpool(_authenticate, request, key)
    except Unauthenticated:
        return _sign_in_form(
            request,
            next_url=next_url,
            error="That API key is not valid, or it was revoked.",
            status_code=400,
        )
    if who.role is Role.SERVICE:
        return _sign_in_form(
            request,
            next_url=next_url,
            error="Service keys are for the operator's backend: sign in with a user or admin key.",
            status_code=403,
        )
    web = state_of(request)
    session_id = await run_in_threadpool(_start_session, request, who.key_id)
    token = web.sessions.issue(who.key_id, auth.digest(key), session_id)
    response = redirect(safe_next(next_url, landing(who)))
    set_cookie(response, request, SESSION_COOKIE, token, max_age=state_of(request).sessions.ttl_s)
    clear_cookie(response, request, PRESESSION_COOKIE)
    return response


def _start_session(request: Request, key_id: int) -> str:
    web = state_of(request)
    with web.db.write() as session:
        return web_sessions.start(session, key_id, ttl_s=web.sessions.ttl_s)


@router.post("/sign-out")
def sign_out(request: Request, viewer: Annotated[Viewer, Depends(signed_in_post)]) -> Response:
    """End the session: on the server (a copy of the cookie no longer works) and in this
    browser."""
    with state_of(request).db.write() as session:
        web_sessions.end(session, viewer.session_id)
    response = redirect("/app/sign-in")
    clear_cookie(response, request, SESSION_COOKIE)
    return response
