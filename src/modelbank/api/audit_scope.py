"""ASGI middleware opening each HTTP request's audit scope (:mod:`modelbank.audit.context`):
the request id (the RequestObserver's, else the caller's ``X-Request-Id`` when sane, else a
new one) that every audit
record the request writes carries. Pure ASGI (not ``BaseHTTPMiddleware``) so the context
variable it sets is the one the endpoint, its dependencies and their thread-pool work see."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from modelbank.audit.context import request_id_from, request_scope
from modelbank.observability.logs import current_request_id


class AuditScopeMiddleware:
    """Wraps the app: one audit scope per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = current_request_id()  # the RequestObserver's, when it runs outside us
        if header is None:
            for name, value in scope.get("headers", ()):
                if name == b"x-request-id":
                    header = value.decode("latin-1")
                    break
        with request_scope(request_id_from(header)):
            await self.app(scope, receive, send)
