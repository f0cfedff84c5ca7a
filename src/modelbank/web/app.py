"""The dashboard application, mounted by the API at ``/app`` (issue "Web dashboard").

A FastAPI sub-application of its own: its errors are HTML pages (or, after a form, a
redirect back with the message), not problem+json; it is absent from the API's OpenAPI
document; it shares the API's :class:`~modelbank.api.deps.Database` and secret key.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbank.api.deps import Database
from modelbank.api.errors import status_for
from modelbank.api.guards import Guard
from modelbank.errors import DomainError
from modelbank.secrets import SecretBox
from modelbank.web import (
    admin,
    admin_offers,
    admin_platform,
    analytics,
    auth_pages,
    earnings,
    keys,
    marketplace,
    marketplace_admin,
    plans,
    pool,
    pool_admin,
    wallet,
    whatif,
)
from modelbank.web import audit as audit_pages
from modelbank.web.render import STATIC_DIR, back_url, flash_redirect, redirect, render
from modelbank.web.session import (
    SESSION_COOKIE,
    CsrfRejected,
    Sessions,
    SignInRequired,
    Viewer,
    WebState,
    clear_cookie,
    signed_in,
)

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        b" img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none';"
        b" form-action 'self' https://checkout.stripe.com",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
"""Sent with every dashboard response. Scripts only from this origin (no inline script);
inline styles are allowed because Plotly sets them on the charts it draws; form-action
allows Stripe Checkout, where buying credits redirects when Stripe is configured."""
LONG_CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}
"""Static files: their URLs carry a version (``?v=``), so a year is safe."""
OWN_ASSETS = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
FORM_ERROR_STATUSES = {400, 402, 409, 422}
"""Statuses a form's failure is shown for on the page it came from (not an error page)."""


def plotly_js() -> Path:
    """``plotly.min.js`` of the installed ``plotly`` package (found without importing it)."""
    spec = importlib.util.find_spec("plotly")
    assert spec is not None and spec.submodule_search_locations, "plotly is a dependency"
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


class SecurityHeaders:
    """Pure ASGI middleware adding :data:`SECURITY_HEADERS` (streaming-safe)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _optional_viewer(request: Request) -> Viewer | None:
    try:
        return signed_in(request)
    except SignInRequired:
        return None


async def _error_page(request: Request, status: int, message: str) -> Response:
    viewer = await run_in_threadpool(_optional_viewer, request)
    titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed"}
    return render(
        request,
        "error.html",
        viewer,
        {"status": status, "title": titles.get(status, "Something went wrong"), "message": message},
        status_code=status,
    )


def _install_errors(app: FastAPI) -> None:
    async def on_sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = back_url(request, "/app/")
        url = f"/app/sign-in?next={quote(target, safe='/')}"
        response = redirect(url + ("&expired=1" if exc.expired else ""))
        if exc.expired:
            clear_cookie(response, request, SESSION_COOKIE)
        return response

    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        status = 403 if isinstance(exc, CsrfRejected) else status_for(exc)
        if (
            request.method == "POST"
            and status in FORM_ERROR_STATUSES
            and not isinstance(exc, CsrfRejected)
        ):
            return flash_redirect(request, back_url(request), exc.message, kind="error")
        return await _error_page(request, status, exc.message)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        if request.method == "POST":
            return flash_redirect(request, back_url(request), message, kind="error")
        return await _error_page(request, 422, message)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return await _error_page(request, exc.status_code, message)

    app.add_exception_handler(SignInRequired, on_sign_in)
    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def create_web_app(db: Database, box: SecretBox) -> FastAPI:
    """The dashboard on ``db``, its sessions sealed with ``box``; mount it at ``/app``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="modelbank dashboard")
    app.state.web = WebState(db=db, sessions=Sessions(box))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Guard)  # an unhandled error: problem+json, never a dropped connection
    _install_errors(app)
    plotly_path = plotly_js()

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_asset() -> FileResponse:
        """Plotly's bundle from the installed package (no CDN), cached for a year."""
        return FileResponse(
            plotly_path, media_type="text/javascript; charset=utf-8", headers=LONG_CACHE
        )

    @app.get("/static/{name}", include_in_schema=False)
    def own_asset(name: str) -> FileResponse:
        """``app.css`` and ``app.js``."""
        if name not in OWN_ASSETS:
            raise StarletteHTTPException(404)
        return FileResponse(STATIC_DIR / name, media_type=OWN_ASSETS[name], headers=LONG_CACHE)

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        """The signed-in key's landing page, or the sign-in form."""
        viewer = _optional_viewer(request)
        return redirect(auth_pages.landing(viewer) if viewer else "/app/sign-in")

    for module in (
        auth_pages,
        wallet,
        keys,
        plans,
        analytics,
        earnings,
        admin,
        admin_offers,
        admin_platform,
        whatif,
        pool,
        pool_admin,
        marketplace,
        marketplace_admin,
        audit_pages,
    ):
        app.include_router(module.router)
    return app
