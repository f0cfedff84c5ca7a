"""Calls to an upstream OpenAI-compatible API with httpx (DESIGN §9 "route and call the
upstream with httpx, explicit timeouts").

Each call either returns what the client may be sent, or raises
:class:`~modelbank.pool.breaker.UpstreamFailure` **before the first byte reaches the
client**, so the router may fail over: a non-streamed answer is read whole first; a stream is
opened and its first chunk read before it is handed over (:class:`OpenStream`). After that,
an upstream that fails mid-stream only ends the stream (no failover after the first byte).

The resource's key travels only in the ``Authorization`` header; it is scrubbed from any
upstream text passed on to the caller and never appears in an exception's message.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from modelbank.pool.breaker import UpstreamFailure, classify
from modelbank.pool.router import Target

MAX_ANSWER_BYTES = 32 * 1024 * 1024
"""Largest non-streamed upstream answer read (images in base64 can be large)."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: ``connect`` to the upstream, ``first_byte`` until its answer (or first stream
    chunk) starts, ``read`` between chunks afterwards."""

    connect: float = 5.0
    first_byte: float = 60.0
    read: float = 60.0


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole non-streamed upstream answer (2xx): its JSON ``body``, the raw ``content``,
    ``latency_ms`` from send to the last byte."""

    status: int
    body: dict[str, Any]
    content: bytes
    latency_ms: float


@dataclass(slots=True)
class OpenStream:
    """A streamed answer whose status is 2xx and whose first chunk has arrived: ``first``
    (bytes), ``ttft_ms`` (send to first chunk). Iterate :meth:`rest`, then :meth:`close`
    (also on cancellation: it closes the upstream connection, which cancels the call)."""

    response: httpx.Response
    first: bytes
    ttft_ms: float
    started: float
    _chunks: AsyncIterator[bytes] = field(repr=False)

    async def rest(self) -> AsyncIterator[bytes]:
        """The chunks after the first."""
        async for chunk in self._chunks:
            yield chunk

    async def close(self) -> None:
        """Close the upstream response (idempotent)."""
        await self.response.aclose()


def scrub(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``[redacted]``."""
    return text.replace(secret, "[redacted]") if secret else text


def _url(target: Target, path: str) -> str:
    return target.base_url.rstrip("/") + path


def _headers(target: Target) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"}


def _scrub_json(value: Any, secret: str) -> Any:
    """``value`` (parsed JSON) with ``secret`` redacted from every string in it."""
    if isinstance(value, str):
        return scrub(value, secret)
    if isinstance(value, list):
        return [_scrub_json(item, secret) for item in value]
    if isinstance(value, dict):
        return {scrub(str(k), secret): _scrub_json(v, secret) for k, v in value.items()}
    return value


def _failure_of_status(target: Target, status: int, content: bytes) -> UpstreamFailure:
    """The failure of an error answer, its text redacted of the resource's key both as sent
    and once JSON escapes are decoded (``\\u0073k-…`` is the key too)."""
    text = content[:65_536].decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(_scrub_json(json.loads(text), target.api_key))
    return classify(status=status, body=scrub(text, target.api_key)[:4_000])


def _failure_of_error(exc: Exception) -> UpstreamFailure:
    return classify(error=exc)


class Upstream:
    """The gateway's HTTP client to upstreams (one :class:`httpx.AsyncClient`, pooled
    connections). ``client`` may be injected (tests: a mock transport)."""

    def __init__(self, client: httpx.AsyncClient | None = None, timeouts: Timeouts | None = None):
        self.timeouts = timeouts or Timeouts()
        t = self.timeouts
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=t.connect, read=t.first_byte, write=t.read, pool=t.connect
            ),
            limits=httpx.Limits(max_connections=1_000, max_keepalive_connections=200),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()

    async def call(self, target: Target, path: str, body: Mapping[str, Any]) -> Answer:
        """POST ``body`` to ``path`` (e.g. ``/chat/completions``) and read the whole answer.
        Raises :class:`UpstreamFailure` on a connect error, timeout, a non-2xx status or an
        answer that is not a JSON object."""
        started = time.perf_counter()
        try:
            response = await self.client.post(
                _url(target, path), content=json.dumps(body), headers=_headers(target)
            )
        except httpx.HTTPError as exc:
            raise _failure_of_error(exc) from None
        content = response.content
        if not 200 <= response.status_code < 300:
            raise _failure_of_status(target, response.status_code, content)
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise classify(status=502, body="upstream answered with something not JSON")
        latency = (time.perf_counter() - started) * 1000
        return Answer(response.status_code, parsed, content, latency)

    async def open_stream(self, target: Target, path: str, body: Mapping[str, Any]) -> OpenStream:
        """POST ``body`` asking for a stream and wait for its first chunk. Raises
        :class:`UpstreamFailure` (connect error, timeout, non-2xx, stream ended before any
        byte): nothing has reached the client yet."""
        started = time.perf_counter()
        request = self.client.build_request(
            "POST", _url(target, path), content=json.dumps(body), headers=_headers(target)
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _failure_of_error(exc) from None
        try:
            if not 200 <= response.status_code < 300:
                content = await response.aread()
                raise _failure_of_status(target, response.status_code, content)
            chunks = response.aiter_raw()
            first = b""
            while not first:
                first = await anext(chunks)
        except StopAsyncIteration:
            await response.aclose()
            raise classify(status=502, body="upstream stream ended before its first byte") from None
        except httpx.HTTPError as exc:
            await response.aclose()
            raise _failure_of_error(exc) from None
        except BaseException:
            await response.aclose()
            raise
        ttft = (time.perf_counter() - started) * 1000
        return OpenStream(response, first, ttft, started, chunks)
