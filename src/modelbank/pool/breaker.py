"""Circuit breaker of one resource and the classification of upstream outcomes (DESIGN §9).

Pure: no I/O, no clock (``now`` is passed in). The health stores (:mod:`.health`) keep the
state in the database or Redis and call these functions to move it, so the rule has one home.

States::

    closed ──(failure_threshold consecutive failures, or success rate < floor
    │          once min_requests were seen)──▶ open
    open ──(cooldown_s elapsed: one process claims the probe)──▶ half_open
    half_open ──(probe succeeds)──▶ closed   (success rate reset to 1.0)
    half_open ──(probe fails)──▶ open        (cool-down starts again)
    half_open ──(probe ends without a verdict: caller error, cancelled)──▶ open, at once
              claimable again
    half_open ──(probe older than probe_timeout_s: its process died)──▶ claimable again

``opened_at`` is when the breaker opened (state ``open``) or when the probe was claimed
(state ``half_open``). The success rate is an exponentially weighted moving average of
outcomes (1 success, 0 failure) with ``alpha = 2 / (window + 1)``: roughly the last
``window`` requests (the usual EWMA/SMA equivalence of the centre of mass).

What counts (:func:`classify`): connection errors, timeouts, resets, 429 and 5xx from the
upstream, and 401/403/402 (the *resource's* key refused or unpaid) are upstream failures:
they count against the resource and may be retried on another one. 400/404/409/413/422 and
content-filter refusals are the caller's own doing: never counted, never retried, passed back
to the caller as they are. The user's balance is never an upstream matter (the gateway
refuses before routing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

import httpx


class State(StrEnum):
    """Breaker state (the ``resource_health.breaker`` column)."""

    CLOSED = "closed"
    """Requests flow."""
    OPEN = "open"
    """Requests are refused until the cool-down has passed."""
    HALF_OPEN = "half_open"
    """One probe request is in flight; every other request is refused."""


class Outcome(StrEnum):
    """What one attempt came to, as far as the resource's health is concerned."""

    SUCCESS = "success"
    UPSTREAM_FAILURE = "upstream_failure"
    """The resource failed (counts against it)."""
    CALLER_ERROR = "caller_error"
    """The request itself was refused (never counts)."""
    CANCELLED = "cancelled"
    """No verdict: the client went away, the deadline passed, or our own code failed."""


class Admission(StrEnum):
    """May a request go to this resource now?"""

    ALLOW = "allow"
    PROBE = "probe"
    """Only as the half-open probe, and only when this process wins the claim."""
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Breaker thresholds (settings ``MODELBANK_BREAKER_*``)."""

    failure_threshold: int = 5
    """Consecutive upstream failures that open a closed breaker."""
    success_rate_floor: float = 0.5
    """A closed breaker opens when the success-rate EWMA falls below this …"""
    min_requests: int = 20
    """… once the resource has served at least this many requests."""
    window: int = 50
    """Requests the success rate and latency EWMAs roughly average over."""
    cooldown_s: float = 30.0
    """Seconds an open breaker refuses everything before a probe is allowed."""
    probe_timeout_s: float = 120.0
    """A probe claimed longer ago than this is presumed lost (its process died): another
    process may claim a new one. Longer than the gateway's upstream timeout."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.min_requests < 0 or self.window < 1:
            raise ValueError("failure_threshold ≥ 1, min_requests ≥ 0 and window ≥ 1")
        if not 0.0 <= self.success_rate_floor <= 1.0:
            raise ValueError("success_rate_floor must be within [0, 1]")
        if self.cooldown_s < 0 or self.probe_timeout_s <= 0:
            raise ValueError("cooldown_s ≥ 0 and probe_timeout_s > 0")

    @property
    def alpha(self) -> float:
        """EWMA smoothing factor ``2 / (window + 1)``."""
        return 2.0 / (self.window + 1)


@dataclass(frozen=True, slots=True)
class Breaker:
    """Breaker state and the counters it decides on."""

    state: State = State.CLOSED
    opened_at: datetime | None = None
    consecutive_failures: int = 0
    success_rate: float = 1.0
    requests: int = 0
    """Attempts with a verdict (successes and upstream failures), all time."""
    failures: int = 0
    """Upstream failures, all time."""


def admission(breaker: Breaker, now: datetime, policy: BreakerPolicy) -> Admission:
    """Whether a request may go to the resource at ``now``: ALLOW (closed), PROBE (open past
    its cool-down, or a half-open probe presumed lost) or DENY."""
    if breaker.state is State.CLOSED:
        return Admission.ALLOW
    since = breaker.opened_at
    if since is None:  # a row written by hand; treat as just opened
        return Admission.DENY
    wait = policy.cooldown_s if breaker.state is State.OPEN else policy.probe_timeout_s
    return Admission.PROBE if now - since >= timedelta(seconds=wait) else Admission.DENY


def claim_probe(breaker: Breaker, now: datetime) -> Breaker:
    """The state after this process claimed the probe (only valid when :func:`admission`
    answered PROBE; the store makes the claim atomic)."""
    return replace(breaker, state=State.HALF_OPEN, opened_at=now)


def ewma(previous: float | None, sample: float, alpha: float) -> float:
    """Exponentially weighted moving average; the first sample is taken as it is."""
    return sample if previous is None else previous + alpha * (sample - previous)


def record(
    breaker: Breaker, outcome: Outcome, now: datetime, policy: BreakerPolicy, *, probe: bool
) -> Breaker:
    """The state after one attempt ended with ``outcome``. ``probe``: the attempt was the
    half-open probe. Caller errors and cancellations change nothing, except that a probe
    that ended so leaves the breaker open and claimable again at once."""
    if outcome in (Outcome.CALLER_ERROR, Outcome.CANCELLED):
        if probe and breaker.state is State.HALF_OPEN:
            return replace(
                breaker, state=State.OPEN, opened_at=now - timedelta(seconds=policy.cooldown_s)
            )
        return breaker
    counted = replace(breaker, requests=breaker.requests + 1)
    if outcome is Outcome.SUCCESS:
        success = replace(
            counted,
            consecutive_failures=0,
            success_rate=ewma(breaker.success_rate, 1.0, policy.alpha),
        )
        if breaker.state is State.HALF_OPEN:
            return replace(success, state=State.CLOSED, opened_at=None, success_rate=1.0)
        return success
    failed = replace(
        counted,
        consecutive_failures=breaker.consecutive_failures + 1,
        failures=breaker.failures + 1,
        success_rate=ewma(breaker.success_rate, 0.0, policy.alpha),
    )
    if breaker.state is State.HALF_OPEN:
        return replace(failed, state=State.OPEN, opened_at=now)
    if breaker.state is State.CLOSED and _trips(failed, policy):
        return replace(failed, state=State.OPEN, opened_at=now)
    return failed  # already open: a late failure of a request admitted before it opened


def _trips(breaker: Breaker, policy: BreakerPolicy) -> bool:
    if breaker.consecutive_failures >= policy.failure_threshold:
        return True
    return (
        breaker.requests >= policy.min_requests and breaker.success_rate < policy.success_rate_floor
    )


class UpstreamFailure(Exception):
    """An attempt that failed before the first byte reached the client (raised by the
    gateway's attempt, built by :func:`classify`).

    ``outcome``: UPSTREAM_FAILURE (counts against the resource) or CALLER_ERROR (never
    counts, never retried: the gateway passes it to the caller). ``kind``: connect, timeout,
    read (error or reset), rate_limited (429), server_error (5xx), auth (401/403: the
    resource's key refused), payment (402: the key's account unpaid), caller_error
    (400/404/409/413/422 …), content_filter. ``retryable``: another resource may be tried.
    ``permanent``: the key itself is refused; the gateway marks the resource failed (the
    pool's ``fail()``). ``body``: the upstream's error text (already scrubbed of the key by
    the caller of :func:`classify`), passed on for caller errors. The message names the
    kind and status only: never a key, never a URL with credentials."""

    def __init__(
        self,
        outcome: Outcome,
        kind: str,
        status: int | None,
        *,
        retryable: bool,
        permanent: bool = False,
        body: str | None = None,
        message: str | None = None,
    ) -> None:
        self.outcome = outcome
        self.kind = kind
        self.status = status
        self.retryable = retryable
        self.permanent = permanent
        self.body = body
        self.message = message or (
            f"upstream {kind}" + ("" if status is None else f" (HTTP {status})")
        )
        super().__init__(self.message)

    @property
    def caller_error(self) -> bool:
        """The request itself was refused: pass to the caller, do not fail over."""
        return self.outcome is Outcome.CALLER_ERROR

    def __repr__(self) -> str:
        return f"UpstreamFailure({self.kind!r}, status={self.status}, retryable={self.retryable})"


CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})
"""OpenAI/Azure error codes of a prompt or completion the provider refused to process."""


def classify(
    status: int | None = None,
    error: BaseException | None = None,
    *,
    body: str | None = None,
    code: str | None = None,
    message: str | None = None,
) -> UpstreamFailure:
    """The :class:`UpstreamFailure` of an upstream error answer (``status`` ≥ 400, its
    error ``body`` text and, when known, the error ``code``; else the code is read from an
    OpenAI-shaped ``{"error": {"code": …}}`` body) or of a transport ``error`` (httpx or OS
    exception) raised before any byte was answered. Exactly one of ``status`` and ``error``.
    Raises ``ValueError`` for a status below 400 (not a failure) and ``TypeError`` for an
    exception that is not a transport error (a bug must not pass for an upstream failure)."""
    if (status is None) == (error is None):
        raise ValueError("classify needs exactly one of status and error")
    if error is not None:
        return UpstreamFailure(
            Outcome.UPSTREAM_FAILURE, _error_kind(error), None, retryable=True, message=message
        )
    assert status is not None
    if status < 400:
        raise ValueError(f"HTTP {status} is not a failure")
    code = code or _error_code(body)
    kind, counts, permanent = _status_kind(status, code)
    return UpstreamFailure(
        Outcome.UPSTREAM_FAILURE if counts else Outcome.CALLER_ERROR,
        kind,
        status,
        retryable=counts,
        permanent=permanent,
        body=body,
        message=message,
    )


def _status_kind(status: int, code: str | None) -> tuple[str, bool, bool]:
    """(kind, counts against the resource and may fail over, permanent)."""
    if code in CONTENT_FILTER_CODES:
        return "content_filter", False, False
    if status in (401, 403):
        return "auth", True, True
    if status == 402:
        return "payment", True, False
    if status == 429:
        return "rate_limited", True, False
    if status == 408:
        return "timeout", True, False
    if status >= 500:
        return "server_error", True, False
    return "caller_error", False, False


def _error_code(body: str | None) -> str | None:
    if not body or "content" not in body:  # cheap: only a filter code matters here
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _error_kind(error: BaseException) -> str:
    if isinstance(error, httpx.ConnectTimeout | httpx.ConnectError):
        return "connect"
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(error, httpx.TransportError | OSError):
        return "read"  # read/write error, reset, protocol error, proxy error
    raise TypeError(f"not a transport error: {type(error).__name__}") from error


__all__ = [
    "CONTENT_FILTER_CODES",
    "Admission",
    "Breaker",
    "BreakerPolicy",
    "Outcome",
    "State",
    "UpstreamFailure",
    "admission",
    "claim_probe",
    "classify",
    "ewma",
    "record",
]
