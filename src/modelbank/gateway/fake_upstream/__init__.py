"""An OpenAI-compatible upstream for tests, the demo and benchmarks (issue 14, item 5).

``create_app(FakeUpstreamConfig(...))`` returns a plain ASGI application (no framework: it is
the baseline of ``bench/gateway.py``, so a request costs a dict lookup, one ``json.loads`` and
one ``json.dumps``). Serve it with uvicorn, or run ``modelbank fake-upstream``.

Endpoints, in OpenAI's shapes:

* ``POST /v1/chat/completions``: a JSON completion, or with ``"stream": true`` server-sent
  events ``data: {chunk}\\n\\n`` … ``data: [DONE]\\n\\n``; with
  ``stream_options.include_usage`` a last chunk with ``"choices": []`` and ``usage``.
* ``POST /v1/embeddings`` (``encoding_format`` ``float`` or ``base64``: little-endian float32,
  the official SDK's default), ``POST /v1/images/generations`` (``n`` images, ``b64_json``
  or ``url``), ``GET /v1/models``.
* ``GET /_fake/stats`` (see :meth:`FakeUpstream.stats_json`), ``POST /_fake/reset`` (stats,
  request counter and random draws start over), ``POST /_fake/config`` (a JSON object of
  :class:`FakeUpstreamConfig` fields to change, e.g. ``{"error_rate": 1}``), and
  ``GET /_fake/image.png`` (the image the ``url`` answers point at).

Usage is a function of the request, so a caller drives exact token counts:

* ``prompt_tokens`` of a chat = ``ceil(B / 4) + 3 × messages + 3``, where ``B`` is the UTF-8
  byte length of every message's text (``content`` when a string, else the ``text`` of its
  parts), summed over the messages before rounding (:func:`chat_prompt_tokens`). One user
  message of ``4 × (P − 6)`` ASCII bytes therefore has exactly ``P`` prompt tokens (``P ≥ 6``;
  :func:`prompt_text_for`). Embeddings: ``ceil(bytes / 4)`` per string input, the length of a
  token-id list. ``X-Fake-Prompt-Tokens: N`` overrides the count (it may then exceed the
  request's byte length, which no real tokenizer does).
* ``completion_tokens`` = ``max_completion_tokens`` or ``max_tokens`` from the body, capped at
  ``config.max_completion_tokens``; ``config.default_completion_tokens`` when neither is given;
  ``X-Fake-Completion-Tokens: N`` overrides. The text is that many 4-byte words (so
  ``ceil(bytes / 4)`` of the text is the count again); streams send one word per chunk.
* ``X-Fake-Cached-Tokens: N`` adds ``prompt_tokens_details.cached_tokens = min(N, prompt)``.

Timing: every endpoint waits ``latency_ms`` before its first byte; a chat then waits ``ttft_ms``
more before its first token (a stream sends the headers at ``latency_ms`` and the role chunk
with the first token at ``latency_ms + ttft_ms``), and each further token ``1 / tokens_per_s``
seconds (0 = no wait). A non-streamed chat answers when its stream would have ended.

Failures: each ``POST /v1/...`` request whose key and body pass draws once from
``random.Random(seed)`` in arrival order and fails when the draw is below ``error_rate``;
``X-Fake-Error: KIND`` forces a kind
(``none`` forces success). Kinds: ``500`` and ``429`` (OpenAI error bodies, ``429`` with
``retry-after: 1``), ``timeout`` (no answer until the client leaves, or ``hang_s``), ``reset``
(the connection is dropped after the response headers, before any body byte) and
``midstream`` (a stream is dropped after half its tokens; non-streamed requests as ``reset``).
Failures come after ``latency_ms``. Per-request timing overrides: ``X-Fake-Latency-Ms``,
``X-Fake-Ttft-Ms``, ``X-Fake-Tokens-Per-S``.

``GET /v1/models`` never waits or fails (a deposit's probe calls it), except with a 401.

Keys: ``Authorization: Bearer KEY``. With ``api_keys`` set, another key gets OpenAI's 401
``invalid_api_key``; a key in ``revoked_keys`` always does. Keys are never stored, logged or
echoed: the stats count SHA-256 fingerprints (64 hex).
"""

from __future__ import annotations

import logging

from modelbank.gateway.fake_upstream.app import FakeUpstream
from modelbank.gateway.fake_upstream.rules import (
    DEFAULT_MODELS,
    ERROR_KINDS,
    FakeStats,
    FakeUpstreamConfig,
    chat_prompt_tokens,
    completion_text,
    fingerprint,
    prompt_text_for,
    text_tokens,
)

__all__ = [
    "DEFAULT_MODELS",
    "ERROR_KINDS",
    "FakeStats",
    "FakeUpstream",
    "FakeUpstreamConfig",
    "chat_prompt_tokens",
    "completion_text",
    "create_app",
    "fingerprint",
    "prompt_text_for",
    "text_tokens",
]


def create_app(config: FakeUpstreamConfig | None = None) -> FakeUpstream:
    """The ASGI app for ``config`` (default: instant, never failing, any key and model).

    Also filters uvicorn's "ASGI callable returned without completing response." line: the
    ``reset`` and ``midstream`` kinds drop connections on purpose.
    """
    _quiet_dropped_connections()
    return FakeUpstream(config or FakeUpstreamConfig())


class _DroppedConnectionFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _quiet_dropped_connections() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DroppedConnectionFilter) for f in logger.filters):
        logger.addFilter(_DroppedConnectionFilter())
