"""ASGI plumbing of the fake upstream: the request's headers, bodies, pauses that notice a
client leaving, and JSON answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


class BadRequest(Exception):
    """A request refused with OpenAI's 400 ``invalid_request_error``."""


class Request:
    """One request: the key, the ``X-Fake-*`` headers (name without the prefix), the host
    and, once read, the JSON body."""

    __slots__ = ("body", "fake", "host", "key", "key_fp")

    def __init__(self, scope: Scope) -> None:
        self.key: str | None = None
        self.key_fp: str | None = None
        self.host = "127.0.0.1"
        self.fake: dict[str, str] = {}
        self.body: dict[str, Any] = {}
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                self.key = token.strip() if scheme.lower() == "bearer" else None
            elif name.startswith(b"x-fake-"):
                self.fake[name[7:].decode("latin-1")] = value.decode("latin-1").strip()
            elif name == b"host":
                self.host = value.decode("latin-1")

    def number(self, header: str, default: float) -> float:
        """``X-Fake-<header>`` as a number ≥ 0, else ``default``."""
        raw = self.fake.get(header)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise BadRequest(f"X-Fake-{header} must be a number") from None
        if not 0 <= value < float("inf"):
            raise BadRequest(f"X-Fake-{header} must be a finite number ≥ 0")
        return value

    def count(self, header: str) -> int | None:
        """``X-Fake-<header>`` as an integer ≥ 0, else ``None``."""
        return None if header not in self.fake else int(self.number(header, 0))


def positive_int(body: dict[str, Any], name: str, default: int, ceiling: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= ceiling:
        raise BadRequest(f"'{name}' must be an integer between 1 and {ceiling}")
    return value


async def read_body(receive: Receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def pause(seconds: float, watcher: asyncio.Future[None]) -> bool:
    """Wait ``seconds`` unless the client leaves first; True when it has left."""
    if seconds > 0:
        await asyncio.wait((watcher,), timeout=seconds)
    return watcher.done()


def chunk(pending: list[str]) -> Message:
    """A body message of the pending SSE events (emptied), more to come."""
    body = "".join(pending).encode()
    pending.clear()
    return {"type": "http.response.body", "body": body, "more_body": True}


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON
) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})
