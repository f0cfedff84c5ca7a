"""Rendering: the Jinja2 environment, page responses, one-shot flash messages and
redirects. Formatting filters come from :mod:`modelbank.web.views`."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import RedirectResponse, Response

from modelbank.web import views
from modelbank.web.session import (
    CSRF_FIELD,
    FLASH_COOKIE,
    FLASH_TTL_S,
    FORM_KEY_FIELD,
    Viewer,
    clear_cookie,
    new_form_key,
    set_cookie,
    state_of,
)

STATIC_DIR = Path(__file__).parent / "static"
NO_STORE = {"Cache-Control": "no-store"}
"""Pages show one key's private data: never cached by the browser or a proxy."""


@cache
def asset_version(name: str) -> str:
    """A short content hash of one of our static files, appended to its URL so that a
    new release is fetched at once."""
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("modelbank.web", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        credits=views.credits,
        usd=views.usd,
        when=views.when,
        day=views.day,
        bps=views.percent_bps,
        multiplier=views.multiplier,
    )
    env.globals.update(
        asset_version=asset_version,
        expiry=views.expiry,
        csrf_field=CSRF_FIELD,
        form_key_field=FORM_KEY_FIELD,
        new_form_key=new_form_key,
        plotly_src=f"/app/static/plotly.min.js?v={version('plotly')}",
    )
    return env


templates = Jinja2Templates(env=_environment())


def render(
    request: Request,
    name: str,
    viewer: Viewer | None,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> Response:
    """Render template ``name`` with ``context`` plus the viewer (nav, CSRF token) and a
    pending flash message (consumed: its cookie is cleared)."""
    flash = None
    raw = request.cookies.get(FLASH_COOKIE)
    if raw:
        flash = state_of(request).sessions.open_flash(raw)
    response = templates.TemplateResponse(
        request,
        name,
        {"viewer": viewer, "flash": flash, **(context or {})},
        status_code=status_code,
        headers=NO_STORE,
    )
    if raw:
        clear_cookie(response, request, FLASH_COOKIE)
    return response


def redirect(url: str) -> RedirectResponse:
    """303 See Other to ``url`` (after a form POST: the browser GETs it)."""
    return RedirectResponse(url, status_code=303, headers=NO_STORE)


def flash_redirect(request: Request, url: str, text: str, *, kind: str = "ok") -> Response:
    """303 to ``url`` carrying a one-shot message shown on the next page."""
    response = redirect(url)
    value = state_of(request).sessions.seal_flash(kind, text)
    set_cookie(response, request, FLASH_COOKIE, value, max_age=FLASH_TTL_S)
    return response


def back_url(request: Request, default: str = "/app/") -> str:
    """Where to send the browser back to after a form: the same-origin ``Referer`` (path
    and query) when it is a dashboard page, else ``default``."""
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        if parts.netloc.lower() == request.url.netloc.lower():
            return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""), default)
    return default


def safe_next(target: str | None, default: str) -> str:
    """``target`` when it is a local dashboard path (``/app/…``, not ``//host``), else
    ``default``: never an open redirect."""
    if (
        target
        and target.startswith("/app/")
        and not target.startswith("//")
        and "\\" not in target
        and all(ord(c) > 31 for c in target)
    ):
        return target
    return default
