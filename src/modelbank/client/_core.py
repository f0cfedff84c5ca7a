"""What the sync and async clients share: an :class:`Operation` (one API call, built once,
so that its retries carry the same ``Idempotency-Key``), the retry policy and the decoding
of answers into models or typed errors. No I/O here."""

from __future__ import annotations

import email.utils
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from modelbank.client.errors import error_for

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENCY_HIT = "Idempotency-Hit"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers worth another try of a safe or idempotent call: rate limited, or the server
(or a proxy before it) failed."""
RETRY_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.RemoteProtocolError,
)
"""Transport failures retried for safe and idempotent calls (a read timeout may mean the
server did the work: only a call the server dedupes may be sent again)."""


def new_key() -> str:
    """A fresh idempotency key (uuid4, 36 characters)."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter: the n-th retry waits a
    uniform random time in [0, min(max_delay_s, base_delay_s × 2ⁿ)], or what the server's
    ``Retry-After`` asks (up to ``max_retry_after_s``; more than that is not waited for).
    ``attempts``: total tries, the first included (1 = no retries)."""

    attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    max_retry_after_s: float = 30.0

    def backoff(self, retry: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """The jittered wait before retry number ``retry`` (0-based), in seconds."""
        return rng(0.0, min(self.max_delay_s, self.base_delay_s * (2**retry)))


NO_RETRIES = RetryPolicy(attempts=1)


@dataclass(frozen=True, slots=True)
class Operation(Generic[T]):
    """One API call. ``retryable``: safe (GET) or idempotent (carries an
    ``Idempotency-Key``, or every event in it does): the client may send it again."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    idempotency_key: str | None = None
    retryable: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)

    def request_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.idempotency_key is not None:
            out[IDEMPOTENCY_KEY] = self.idempotency_key
        return out


def get(path: str, parse: Callable[[httpx.Response], T], **params: Any) -> Operation[T]:
    """A GET (safe: retried); None-valued params are left out."""
    query = {k: v for k, v in params.items() if v is not None}
    return Operation("GET", path, parse, params=query or None, retryable=True)


def send(
    method: str,
    path: str,
    parse: Callable[[httpx.Response], T],
    body: Mapping[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    keyed: bool = False,
    retryable: bool | None = None,
) -> Operation[T]:
    """A write. ``keyed``: the route takes an ``Idempotency-Key`` (``idempotency_key`` or
    a new uuid4), which makes it retryable. ``body``'s None values are left out (the
    server's defaults apply)."""
    key = (idempotency_key or new_key()) if keyed else None
    json = None if body is None else {k: v for k, v in body.items() if v is not None}
    return Operation(
        method,
        path,
        parse,
        json=json,
        idempotency_key=key,
        retryable=keyed if retryable is None else retryable,
    )


def decode(kind: type[M]) -> Callable[[httpx.Response], M]:
    """Decode a JSON answer into ``kind``."""

    def parse(response: httpx.Response) -> M:
        return kind.model_validate_json(response.content)

    return parse


def replayable(kind: type[M]) -> Callable[[httpx.Response], M]:
    """Decode into ``kind`` with ``replayed`` from the ``Idempotency-Hit`` header."""

    def parse(response: httpx.Response) -> M:
        data = response.json()
        data["replayed"] = response.headers.get(IDEMPOTENCY_HIT, "").lower() == "true"
        return kind.model_validate(data)

    return parse


def nothing(_: httpx.Response) -> None:
    """For answers without a body (204)."""
    return None


def outcome(op: Operation[T], response: httpx.Response) -> T:
    """The result of ``op`` from a final answer. Raises the typed
    :class:`~modelbank.client.errors.ModelbankError` of a 4xx/5xx."""
    if response.status_code >= 400:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        raise error_for(response.status_code, body, response.text)
    return op.parse(response)


def retry_delay(
    op: Operation[Any],
    policy: RetryPolicy,
    retry: int,
    response: httpx.Response | None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> float | None:
    """Seconds to wait before retry number ``retry`` (0-based) of ``op`` after
    ``response`` (None: a transport error), or None when it is not to be retried: not
    safe or idempotent, out of attempts, an answer not worth retrying, or a Retry-After
    longer than the policy waits."""
    if not op.retryable or retry + 1 >= policy.attempts:
        return None
    if response is None:
        return policy.backoff(retry)
    if response.status_code not in RETRY_STATUSES:
        return None
    asked = retry_after_s(response.headers.get("Retry-After"), now)
    if asked is None:
        return policy.backoff(retry)
    return asked if asked <= policy.max_retry_after_s else None


def retry_after_s(value: str | None, now: Callable[[], datetime]) -> float | None:
    """A ``Retry-After`` header in seconds (RFC 9110: delta-seconds or an HTTP date);
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())
