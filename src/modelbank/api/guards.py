"""ASGI guards around the whole app (issue 16 part 1): a request body limit enforced before
the body is read into memory, and a last-resort handler that answers every unhandled error
as problem+json instead of dropping the connection.

Both are pure ASGI middleware (no ``BaseHTTPMiddleware``: it buffers and costs ~10 % of a
request). :class:`Guard` is installed on the API app and on the mounted dashboard and
gateway apps, so an error anywhere gets a JSON body with the request id that the log line
names.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelbank.observability import logs

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
"""A caller's ``X-Request-Id`` longer than this (or not printable ASCII) is replaced by our
own: it goes into logs and bodies, so it is bounded like any other input."""

log = logging.getLogger("modelbank.api")


class BodyTooLarge(StarletteHTTPException):
    """The request body is larger than the configured limit (413 ``body_too_large``).

    An HTTP exception so that the handlers that read the body (FastAPI's, forms) pass it on
    unchanged instead of wrapping it as a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")
        self.limit = limit


def request_id_of(scope: Scope) -> str:
    """The request's id: the caller's ``X-Request-Id`` when it is 1–128 printable ASCII
    characters, else a new random one (32 hex). Stored in ``scope["state"]`` by
    :class:`Guard` so that every layer reports the same id."""
    state = scope.setdefault("state", {})
    found = state.get("request_id") or logs.current_request_id()  # the observer's, if any
    if isinstance(found, str):
        state["request_id"] = found
        return found
    rid = ""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            if 0 < len(text) <= MAX_REQUEST_ID_LENGTH and text.isascii() and text.isprintable():
                rid = text
            break
    rid = rid or uuid.uuid4().hex
    state["request_id"] = rid
    return rid


def _problem_bytes(status: int, code: str, title: str, detail: str, rid: str) -> bytes:
    body: dict[str, Any] = {
        "type": f"urn:modelbank:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": rid,
    }
    return json.dumps(body).encode()


async def _send_problem(
    send: Send, status: int, code: str, title: str, detail: str, rid: str
) -> None:
    body = _problem_bytes(status, code, title, detail, rid)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if logs.current_request_id() is None:  # else the RequestObserver adds it
        headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Pure ASGI middleware: bounds the request body at ``max_body_bytes`` (``None``: no
    bound; a ``Content-Length`` above it is refused before anything is read, a chunked body
    as soon as the bytes received pass it) and turns any exception that escapes the app
    into a 500 problem+json ``internal_error`` with the request id (logged with its
    traceback). A response already under way when the error happens is ended cleanly (its
    body closed) rather than the connection dropped."""

    def __init__(self, app: ASGIApp, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        # the RequestObserver (outside) already puts the id on every response
        add_header = logs.current_request_id() is None
        limit = self.max_body_bytes
        if limit is not None:
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        declared = 0
                    if declared > limit:
                        await _send_problem(
                            send,
                            413,
                            "body_too_large",
                            "Content Too Large",
                            str(BodyTooLarge(limit).detail),
                            rid,
                        )
                        return
            receive = _counting(receive, limit)
        started = False
        finished = False

        async def tracked(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start" and not add_header:
                started = True
            elif message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                if not any(k.lower() == REQUEST_ID_HEADER.encode() for k, _ in headers):
                    headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                    message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except BodyTooLarge as exc:
            if not started:
                await _send_problem(
                    send, 413, "body_too_large", "Content Too Large", str(exc.detail), rid
                )
        except Exception:
            log.exception("unhandled error (request id %s) on %s", rid, scope.get("path"))
            if not started:
                await _send_problem(
                    send,
                    500,
                    "internal_error",
                    "Internal Server Error",
                    f"an unexpected error happened; quote request id {rid} when reporting it",
                    rid,
                )
            elif not finished:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


def _counting(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`BodyTooLarge` once more than ``limit`` body bytes
    arrived (whatever ``Content-Length`` said)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


__all__ = ["BodyTooLarge", "Guard", "request_id_of"]
