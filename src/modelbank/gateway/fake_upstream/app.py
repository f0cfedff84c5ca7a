"""The fake upstream's ASGI application: routing, the steps every ``/v1`` request runs, and
the endpoints other than chat (``chat.py``).

A plain ASGI callable (no framework) because it is the benchmarks' baseline: a request costs a
dict lookup, one ``json.loads`` and one ``json.dumps``. Each ``/v1`` POST runs the same steps:
count and check the key and read the body (:meth:`FakeUpstream.open`), validate, draw the
failure (:meth:`FakeUpstream.failure`), wait ``latency_ms``, then fail or answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from modelbank.errors import InvalidInput
from modelbank.gateway.fake_upstream import chat
from modelbank.gateway.fake_upstream.asgi import (
    JSON,
    SSE,
    BadRequest,
    Receive,
    Request,
    Scope,
    Send,
    positive_int,
    read_body,
    respond,
    wait_disconnect,
)
from modelbank.gateway.fake_upstream.rules import (
    DEFAULT_MODELS,
    ERROR_KINDS,
    MAX_EMBEDDING_DIMENSIONS,
    MAX_IMAGES,
    FakeStats,
    FakeUpstreamConfig,
    error_body,
    fingerprint,
    text_tokens,
)

_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
_PNG_B64 = base64.b64encode(_PNG).decode()
_Handler = Callable[[Request, Receive, Send], Awaitable[None]]


class FakeUpstream:
    """The ASGI app. ``config`` (a :class:`FakeUpstreamConfig`) and ``stats`` (a
    :class:`FakeStats`) are live attributes: a test in the same process may read or replace
    them, as ``/_fake/stats``, ``/_fake/config`` and ``/_fake/reset`` do over HTTP."""

    def __init__(self, config: FakeUpstreamConfig) -> None:
        self.config = config
        self.stats = FakeStats()
        self._rng = random.Random(config.seed)
        self._seq = 0
        self._routes: dict[tuple[str, str], _Handler] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/images/generations"): self._images,
            ("GET", "/v1/models"): self._models,
            ("GET", "/_fake/stats"): self._stats,
            ("POST", "/_fake/reset"): self._reset,
            ("POST", "/_fake/config"): self._configure,
            ("GET", "/_fake/image.png"): self._image,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        method, path = scope["method"], scope["path"]
        handler = self._routes.get((method, path))
        if handler is None:
            message = f"Unknown request URL: {method} {path}"
            await respond(send, 404, error_body(message, "invalid_request_error", None))
            return
        self.stats.in_flight += 1
        try:
            await handler(Request(scope), receive, send)
        except BadRequest as exc:
            await respond(send, 400, error_body(str(exc), "invalid_request_error", None))
        finally:
            self.stats.in_flight -= 1  # self.stats: a reset carries the count over

    # --- the steps of a /v1 request ------------------------------------------------------

    async def open(self, endpoint: str, request: Request, receive: Receive, send: Send) -> bool:
        """Count the request, check its key (a 401 is answered here: False), read the JSON
        body of a POST into ``request.body``. Raises BadRequest for a bad body or model."""
        self.stats.requests[endpoint] += 1
        key, config = request.key, self.config
        if key is not None:
            request.key_fp = fingerprint(key)
            self.stats.keys[request.key_fp] += 1
        if key is not None and key in config.revoked_keys:
            message = "This API key has been revoked."
        elif config.api_keys is not None and key not in config.api_keys:
            message = "Incorrect API key provided." if key else "You didn't provide an API key."
        else:
            if endpoint != "models":
                request.body = await self._json_body(receive)
            return True
        self.stats.errors["401"] += 1
        await respond(send, 401, error_body(message, "invalid_request_error", "invalid_api_key"))
        return False

    async def _json_body(self, receive: Receive) -> dict[str, Any]:
        try:
            body = json.loads(await read_body(receive))
        except ValueError:
            raise BadRequest("We could not parse the JSON body of your request.") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("You must provide a model parameter.")
        if self.config.models is not None and model not in self.config.models:
            raise BadRequest(f"The model `{model}` does not exist.")
        return body

    def failure(self, request: Request, endpoint: str) -> str:
        """The failure kind to play, or "" for success. One draw per request in arrival
        order, always (so a forced kind does not shift the sequence). Records the request
        in ``stats.recent``. Raises BadRequest for an unknown ``X-Fake-Error``."""
        draw = self._rng.random()
        body = request.body
        options = body.get("stream_options")
        self.stats.recent.append(
            {
                "endpoint": endpoint,
                "model": body.get("model"),
                "stream": body.get("stream") is True,
                "max_tokens": body.get("max_completion_tokens", body.get("max_tokens")),
                "include_usage": isinstance(options, dict) and options.get("include_usage"),
                "key": request.key_fp,
            }
        )
        forced = request.fake.get("error")
        if forced is not None:
            if forced == "none":
                return ""
            if forced not in ERROR_KINDS:
                raise BadRequest(f"X-Fake-Error must be none or one of {', '.join(ERROR_KINDS)}")
            return forced
        return self.config.error_kind if draw < self.config.error_rate else ""

    async def latency(self, request: Request) -> None:
        """Wait ``latency_ms`` (or ``X-Fake-Latency-Ms``)."""
        seconds = request.number("latency-ms", self.config.latency_ms) / 1000
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def fail(self, kind: str, receive: Receive, send: Send, *, sse: bool) -> None:
        """Play a failure: an error body (500, 429), a hang until the client leaves or
        ``hang_s`` (then 504), or a dropped connection (headers sent, no body: the app
        returns and uvicorn closes the socket)."""
        self.stats.errors[kind] += 1
        if kind == "500":
            message = "The server had an error while processing your request. Sorry about that!"
            await respond(send, 500, error_body(message, "server_error", None))
        elif kind == "429":
            body = error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")
            await respond(send, 429, body, [*JSON, (b"retry-after", b"1")])
        elif kind == "timeout":
            try:
                await asyncio.wait_for(wait_disconnect(receive), timeout=self.config.hang_s)
            except TimeoutError:
                await respond(send, 504, error_body("Gateway timeout", "server_error", None))
            else:
                self.stats.hangs_abandoned += 1
        else:
            headers = SSE if sse else [*JSON, (b"content-length", b"4096")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})

    def next_id(self, prefix: str) -> str:
        """A response id, unique in this process since the last reset."""
        self._seq += 1
        return f"{prefix}-fake{self._seq:x}"

    # --- endpoints ------------------------------------------------------------------------

    async def _chat(self, request: Request, receive: Receive, send: Send) -> None:
        await chat.chat(self, request, receive, send)

    async def _embeddings(self, request: Request, receive: Receive, send: Send) -> None:
        if not await self.open("embeddings", request, receive, send):
            return
        body = request.body
        inputs = _embedding_inputs(body.get("input"))
        dims = positive_int(
            body, "dimensions", self.config.embedding_dimensions, MAX_EMBEDDING_DIMENSIONS
        )
        as_base64 = body.get("encoding_format") == "base64"
        override = request.count("prompt-tokens")
        tokens = sum(_input_tokens(item) for item in inputs) if override is None else override
        kind = self.failure(request, "embeddings")
        await self.latency(request)
        if kind:
            await self.fail(kind, receive, send, sse=False)
            return
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(item, dims, as_base64)}
            for i, item in enumerate(inputs)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        payload = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        await respond(send, 200, json.dumps(payload).encode())

    async def _images(self, request: Request, receive: Receive, send: Send) -> None:
        if not await self.open("images.generations", request, receive, send):
            return
        body = request.body
        if not isinstance(body.get("prompt"), str):
            raise BadRequest("'prompt' must be a string.")
        n = positive_int(body, "n", 1, MAX_IMAGES)
        response_format = body.get("response_format") or "url"
        if response_format not in ("url", "b64_json"):
            raise BadRequest("'response_format' must be url or b64_json.")
        kind = self.failure(request, "images.generations")
        await self.latency(request)
        if kind:
            await self.fail(kind, receive, send, sse=False)
            return
        if response_format == "url":
            item = {"url": f"http://{request.host}/_fake/image.png"}
        else:
            item = {"b64_json": _PNG_B64}
        payload = {"created": int(time.time()), "data": [dict(item) for _ in range(n)]}
        await respond(send, 200, json.dumps(payload).encode())

    async def _models(self, request: Request, receive: Receive, send: Send) -> None:
        if not await self.open("models", request, receive, send):
            return
        names = DEFAULT_MODELS if self.config.models is None else self.config.models
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "fake-upstream"}
            for name in names
        ]
        await respond(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def _stats(self, request: Request, receive: Receive, send: Send) -> None:
        payload = {**self.stats.as_json(), "config": self.config.public()}
        payload["in_flight"] -= 1  # not this request
        await respond(send, 200, json.dumps(payload).encode())

    async def _reset(self, request: Request, receive: Receive, send: Send) -> None:
        self.stats = FakeStats(in_flight=self.stats.in_flight)
        self._rng = random.Random(self.config.seed)
        self._seq = 0
        await respond(send, 200, b'{"reset":true}')

    async def _configure(self, request: Request, receive: Receive, send: Send) -> None:
        """Change settings: a JSON object of :class:`FakeUpstreamConfig` fields (key sets and
        models as lists). A new ``seed`` restarts the draws."""
        try:
            changes = json.loads(await read_body(receive))
        except ValueError:
            raise BadRequest("The body must be a JSON object.") from None
        if not isinstance(changes, dict):
            raise BadRequest("The body must be a JSON object.")
        for name in ("api_keys", "revoked_keys"):
            if isinstance(changes.get(name), list):
                changes[name] = frozenset(changes[name])
        if isinstance(changes.get("models"), list):
            changes["models"] = tuple(changes["models"])
        try:
            config = replace(self.config, **changes)
        except (TypeError, InvalidInput) as exc:
            raise BadRequest(str(exc)) from None
        if config.seed != self.config.seed:
            self._rng = random.Random(config.seed)
        self.config = config
        await respond(send, 200, json.dumps(config.public()).encode())

    async def _image(self, request: Request, receive: Receive, send: Send) -> None:
        await respond(send, 200, _PNG, [(b"content-type", b"image/png")])


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _embedding_inputs(raw: Any) -> list[Any]:
    """``input`` as a list of strings or token-id lists. Raises BadRequest otherwise."""
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'input' must be a string, an array of strings or of token arrays.")
    for item in raw:
        if not isinstance(item, str | list) or not item:
            raise BadRequest("'input' items must be non-empty strings or token arrays.")
    return raw


def _input_tokens(item: str | list[int]) -> int:
    return text_tokens(item) if isinstance(item, str) else len(item)


def _vector(item: str | list[int], dims: int, as_base64: bool) -> list[float] | str:
    """A deterministic vector from the input's CRC-32: values in [-0.5, 0.5]; base64 of
    little-endian float32 (what the official SDK asks for by default) when asked."""
    seed = zlib.crc32(item.encode() if isinstance(item, str) else repr(item).encode())
    vector = [((seed >> (j % 24)) & 0xFF) / 255 - 0.5 for j in range(dims)]
    if as_base64:
        return base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
    return vector
