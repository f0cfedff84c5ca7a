"""The request observer (issue 16 part 5): a pure ASGI middleware around the whole app
(``/api/v1``, the dashboard at ``/app`` and the gateway at ``/v1``) that

* takes the request id from ``X-Request-Id`` (1–128 characters of ``A-Za-z0-9._:-``) or
  makes one (32 hex digits), binds it to the logs and echoes it on the response;
* counts the request by method, route *template* (``/api/v1/users/{user_id}/wallet``, never
  the raw path: bounded label values) and status, and times it;
* logs one ``request`` line (method, route, path, status, duration_ms) at INFO when
  ``log_requests`` and the JSON logs are configured
  (:func:`modelbank.observability.logs.configure`).

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task or body copy per request (the
whole cost is a few microseconds; bench figures in the README). And ``/metrics``.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbank.auth.errors import Forbidden, Unauthenticated
from modelbank.observability import logs
from modelbank.observability.metrics import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    DatabaseCollector,
    render,
)

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
UNMATCHED = "unmatched"
"""Route label of requests no route matched (404s of any path: one label, not one per path)."""


def route_template(scope: Scope) -> str:
    """The matched route's path template, with the prefixes of the mounts it sits under."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return UNMATCHED
    prefix = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
    return f"{prefix}{path}" or "/"


class RequestObserver:
    """See the module doc. ``log_requests``: one INFO line per request."""

    def __init__(self, app: ASGIApp, *, log_requests: bool = True) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        raw_id = request_id.encode()
        status = 500
        token = logs.bind_request(request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                # A response that names its own request (the gateway's call id, which keys
                # its route log and usage event) keeps it: one X-Request-Id header, never two.
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", raw_id))
                message["headers"] = headers
            await send(message)

        failed = True
        try:
            await self.app(scope, receive, send_with_id)
            failed = False
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            _count(method, route, status).inc()
            _timer(method, route).observe(elapsed)
            log = logs.request_log() if self.log_requests else None
            if log is not None:
                log.info(
                    "request",
                    method=method,
                    route=route,
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                )
            if not failed:
                # An unhandled error goes on to the outer error handler, which may want the
                # id (logs.current_request_id()): left bound there (the request's own task).
                logs.unbind_request(token)


_counts: dict[tuple[str, str, int], Any] = {}
_timers: dict[tuple[str, str], Any] = {}


def _count(method: str, route: str, status: int) -> Any:
    # the labelled child, found once per (method, route, status): .labels() takes a lock
    # and checks its arguments on every call
    child = _counts.get((method, route, status))
    if child is None:
        child = _counts[(method, route, status)] = HTTP_REQUESTS.labels(method, route, str(status))
    return child


def _timer(method: str, route: str) -> Any:
    child = _timers.get((method, route))
    if child is None:
        child = _timers[(method, route)] = HTTP_LATENCY.labels(method, route)
    return child


def _request_id(scope: Scope) -> str:
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _VALID_ID.match(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


def install_metrics(app: FastAPI, collector: DatabaseCollector, token: str | None) -> None:
    """``GET /metrics``: the Prometheus text exposition, for an admin key or, when
    ``token`` (``MODELBANK_METRICS_TOKEN``) is set, that bearer token (Prometheus'
    ``authorization`` setting); 401/403 problem+json otherwise."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Any:
        scheme, _, credential = (request.headers.get("authorization") or "").partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("missing credentials: send Authorization: Bearer <key>")
        if not (token and hmac.compare_digest(credential.encode(), token.encode())):
            who = await run_in_threadpool(request.app.state.db.authenticate, credential)
            if not who.is_admin:
                raise Forbidden("/metrics needs an admin key or the metrics token")
        body, content_type = await run_in_threadpool(render, registry)
        return Response(body, media_type=content_type)


__all__ = ["REQUEST_ID_HEADER", "RequestObserver", "install_metrics", "route_template"]
