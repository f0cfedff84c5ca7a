"""The fake upstream's configuration, counters and usage rules (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from modelbank.errors import InvalidInput

ErrorKind = Literal["500", "429", "timeout", "reset", "midstream"]
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)

DEFAULT_MODELS = ("fake-chat", "fake-embed", "fake-image")
"""What ``GET /v1/models`` lists when ``config.models`` is ``None`` (any model accepted)."""
RECENT_REQUESTS = 64
"""How many request summaries ``/_fake/stats`` keeps: enough for a test, bounded memory."""
TOKEN_BYTES = 4
"""UTF-8 bytes per token, in prompts and completions alike (the usage rule)."""
MESSAGE_OVERHEAD_TOKENS = 3
"""Tokens added per chat message and once per request (OpenAI's published estimate)."""
MAX_EMBEDDING_DIMENSIONS = 4096
"""Largest ``dimensions`` accepted: a bound on the work one request can ask for."""
MAX_IMAGES = 10
"""Largest ``n`` of an image request (OpenAI's own limit)."""
WORDS = (" lor", " ips", " dol", " sit", " ame", " con", " sec", " adi")
"""Completion tokens, one 4-byte word each, so ``ceil(bytes / 4)`` of a text is its count."""


@dataclass(frozen=True, slots=True)
class FakeUpstreamConfig:
    """How the fake upstream behaves. Times in ms, rates in tokens/s, ``error_rate`` in [0, 1],
    ``error_kind`` one of :data:`ERROR_KINDS`, ``hang_s`` the longest a ``timeout`` hangs.

    Key and model collections may be any iterable (stored as frozensets, models as a
    tuple). ``api_keys`` ``None`` accepts any key (or none); ``revoked_keys`` always get a
    401; ``models`` ``None`` accepts any model name (and lists :data:`DEFAULT_MODELS`).
    ``default_completion_tokens`` is the completion length of a chat without ``max_tokens``;
    ``max_completion_tokens`` caps any chat's. Raises :class:`~modelbank.errors.InvalidInput`
    for a value out of range.
    """

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    error_rate: float = 0.0
    error_kind: str = "500"
    seed: int = 0
    api_keys: Collection[str] | None = None
    revoked_keys: Collection[str] = frozenset()
    models: Collection[str] | None = None
    default_completion_tokens: int = 16
    max_completion_tokens: int = 4096
    embedding_dimensions: int = 16
    hang_s: float = 3600.0

    def __post_init__(self) -> None:
        # Any collection in, a frozenset (O(1) membership) or an ordered tuple stored.
        if self.api_keys is not None:
            object.__setattr__(self, "api_keys", frozenset(self.api_keys))
        object.__setattr__(self, "revoked_keys", frozenset(self.revoked_keys))
        if self.models is not None:
            object.__setattr__(self, "models", tuple(self.models))
        for name in ("latency_ms", "ttft_ms", "tokens_per_s", "hang_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value >= 0:
                raise InvalidInput(f"{name} must be a number ≥ 0, got {value!r}", field=name)
        rate = self.error_rate
        if not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise InvalidInput(f"error_rate must be between 0 and 1, got {rate!r}")
        if self.error_kind not in ERROR_KINDS:
            raise InvalidInput(
                f"error_kind must be one of {', '.join(ERROR_KINDS)}, got {self.error_kind!r}"
            )
        for name in ("default_completion_tokens", "max_completion_tokens", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InvalidInput(f"{name} must be an integer ≥ 0, got {value!r}", field=name)
        dims = self.embedding_dimensions
        if not isinstance(dims, int) or not 1 <= dims <= MAX_EMBEDDING_DIMENSIONS:
            raise InvalidInput(f"embedding_dimensions must be 1…{MAX_EMBEDDING_DIMENSIONS}")

    def public(self) -> dict[str, Any]:
        """The settings as JSON, keys as counts only (never the keys themselves)."""
        return {
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "tokens_per_s": self.tokens_per_s,
            "error_rate": self.error_rate,
            "error_kind": self.error_kind,
            "seed": self.seed,
            "api_keys": None if self.api_keys is None else len(self.api_keys),
            "revoked_keys": len(self.revoked_keys),
            "models": None if self.models is None else list(self.models),
            "default_completion_tokens": self.default_completion_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "embedding_dimensions": self.embedding_dimensions,
            "hang_s": self.hang_s,
        }


@dataclass(slots=True)
class FakeStats:
    """Counters since start or the last reset. Keys appear as SHA-256 fingerprints only.

    ``requests``: per endpoint (``chat.completions``, ``embeddings``, ``images.generations``,
    ``models``); ``errors``: per kind played (``500``, ``429``, ``timeout``, ``reset``,
    ``midstream``) and ``401``; ``keys``: fingerprint → requests; ``streams_cancelled``:
    streams whose client left before ``[DONE]``; ``hangs_abandoned``: ``timeout`` hangs the
    client left; ``recent``: the last :data:`RECENT_REQUESTS` requests (endpoint, model,
    stream, max_tokens, include_usage, key fingerprint).
    """

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    streams_completed: int = 0
    streams_cancelled: int = 0
    hangs_abandoned: int = 0
    in_flight: int = 0
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))

    def as_json(self) -> dict[str, Any]:
        """What ``GET /_fake/stats`` answers."""
        return {
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "keys": dict(self.keys),
            "streams": {"completed": self.streams_completed, "cancelled": self.streams_cancelled},
            "hangs_abandoned": self.hangs_abandoned,
            "in_flight": self.in_flight,
            "recent": list(self.recent),
        }


def text_tokens(text: str) -> int:
    """``ceil(UTF-8 bytes / 4)``: the token count of one text."""
    return -(-len(text.encode()) // TOKEN_BYTES)


def _message_bytes(message: Any) -> int:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return len(content.encode())
    if isinstance(content, list):
        return sum(
            len(part["text"].encode())
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def chat_prompt_tokens(messages: list[Any]) -> int:
    """``ceil(B / 4) + 3 × len(messages) + 3``, ``B`` the UTF-8 bytes of every message's text
    (``content`` when a string, else the ``text`` of its parts) summed before rounding."""
    total = sum(_message_bytes(m) for m in messages)
    return -(-total // TOKEN_BYTES) + MESSAGE_OVERHEAD_TOKENS * (len(messages) + 1)


def prompt_text_for(prompt_tokens: int) -> str:
    """The content of ONE user message whose chat has exactly ``prompt_tokens`` prompt tokens
    (``4 × (P − 6)`` ASCII bytes). Raises InvalidInput below 6, the overhead of one message."""
    floor = 2 * MESSAGE_OVERHEAD_TOKENS
    if prompt_tokens < floor:
        raise InvalidInput(f"a one-message chat has at least {floor} prompt tokens")
    return "abcd" * (prompt_tokens - floor)


def completion_text(tokens: int) -> str:
    """The text of a completion of ``tokens`` tokens: that many 4-byte words."""
    return "".join(WORDS[i % len(WORDS)] for i in range(tokens))


def fingerprint(api_key: str) -> str:
    """SHA-256 hex (64 characters) of a key: how the stats name a key without holding it."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def usage_json(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    """OpenAI's ``usage`` object; ``prompt_tokens_details.cached_tokens`` only when asked,
    capped at ``prompt``."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": min(cached, prompt)}
    return usage


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    """OpenAI's error object, ``{"error": {"message", "type", "param", "code"}}``, as bytes."""
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()
