"""Health of the pool's resources, shared by every API process (DESIGN §9, §14).

A :class:`HealthStore` keeps, per resource: the circuit breaker (:mod:`.breaker`), the
requests in flight (every process), EWMA latency and time to first token, the success-rate
EWMA, consecutive failures and all-time request and failure totals. Two stores:

- :class:`~modelbank.pool.health_sql.SqlHealthStore`: ``resource_health`` rows (SQLite or
  PostgreSQL). Each call is its own short transaction on its own session, never inside the
  caller's ledger transaction: ``begin`` one upsert (``in_flight + 1``), ``finish`` a locked
  read and one update, the probe claim a compare-and-set ``UPDATE … WHERE breaker = :seen
  AND opened_at = :seen`` (exactly one process wins), ``snapshot`` one query for all ids.
- :class:`~modelbank.pool.health_redis.RedisHealthStore` (``MODELBANK_REDIS_URL``): a hash
  per resource and an ``INCR``/``DECR`` counter for in-flight; ``finish`` and the probe
  claim are ``WATCH``/``MULTI`` optimistic transactions (retried when another process wrote
  the hash in between: exactly one claim wins), ``snapshot`` one pipelined round trip.

Both call :func:`apply` (pure) to compute the new state, so the breaker rule has one home.
Latency EWMAs learn from successes only (a timeout's "latency" is the timeout). In-flight
counts of a process that dies mid-request stay until the resource's row is reset; they only
weigh on the load term of the score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from modelbank.pool.breaker import Breaker, BreakerPolicy, Outcome, ewma, record

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelbank.config import Settings


@dataclass(frozen=True, slots=True)
class Health:
    """One resource's shared health. Latencies in milliseconds, None until measured."""

    resource_id: int
    breaker: Breaker = field(default_factory=Breaker)
    in_flight: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Ticket:
    """An attempt under way on ``resource_id`` (counted in flight until finished).
    ``probe``: it is the half-open probe this process claimed."""

    resource_id: int
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """One finished attempt, as :meth:`HealthStore.record` applies it."""

    outcome: Outcome
    at: datetime
    latency_ms: float | None = None
    ttft_ms: float | None = None
    probe: bool = False


@dataclass(slots=True)
class Delta:
    """What one process has to add to a resource's shared health since its last flush:
    ``in_flight`` (+1 per attempt begun, −1 per attempt finished) and the attempts'
    ``results`` in the order they finished."""

    in_flight: int = 0
    results: list[Result] = field(default_factory=list)


class HealthStore(Protocol):
    """Shared health; every method is one short, self-contained round trip (or two)."""

    policy: BreakerPolicy

    def begin(
        self, resource_id: int, *, probe: bool = False, now: datetime | None = None
    ) -> Ticket | None:
        """Count an attempt in flight. ``probe``: also claim the half-open probe (the
        breaker is open past its cool-down, or a probe was lost); None when another
        process claimed it first or the breaker no longer admits one. Without ``probe``
        never None (the router decided admission from a snapshot)."""
        ...

    def finish(
        self,
        ticket: Ticket,
        outcome: Outcome,
        *,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        now: datetime | None = None,
    ) -> Health:
        """End the attempt: in flight − 1, and the breaker, success rate and latency EWMAs
        moved by :func:`apply`. Returns the new health."""
        ...

    def record(self, deltas: Mapping[int, Delta]) -> dict[int, Health]:
        """Apply a batch of in-flight changes and results (the router's write-behind
        flush), each result through :func:`apply` in order; returns the new health of each
        resource. One transaction (database) or one optimistic transaction per resource
        (Redis)."""
        ...

    def snapshot(self, resource_ids: list[int]) -> dict[int, Health]:
        """Every listed resource's health (a fresh :class:`Health` for one never used), in
        one round trip."""
        ...


def apply(
    health: Health,
    outcome: Outcome,
    *,
    latency_ms: float | None,
    ttft_ms: float | None,
    now: datetime,
    policy: BreakerPolicy,
    probe: bool,
) -> Health:
    """The health after one attempt ended (in flight not included: each store counts it
    atomically). Breaker and success rate: :func:`modelbank.pool.breaker.record`; latency
    and TTFT EWMAs (alpha ``policy.alpha``) learn from successes only."""
    breaker = record(health.breaker, outcome, now, policy, probe=probe)
    latency, ttft = health.latency_ms, health.ttft_ms
    if outcome is Outcome.SUCCESS:
        if latency_ms is not None:
            latency = ewma(latency, latency_ms, policy.alpha)
        if ttft_ms is not None:
            ttft = ewma(ttft, ttft_ms, policy.alpha)
    return replace(health, breaker=breaker, latency_ms=latency, ttft_ms=ttft, updated_at=now)


def apply_all(health: Health, results: Sequence[Result], policy: BreakerPolicy) -> Health:
    """:func:`apply` of each result in turn."""
    for result in results:
        health = apply(
            health,
            result.outcome,
            latency_ms=result.latency_ms,
            ttft_ms=result.ttft_ms,
            now=result.at,
            policy=policy,
            probe=result.probe,
        )
    return health


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """The breaker thresholds of ``settings`` (``MODELBANK_BREAKER_*``)."""
    return BreakerPolicy(
        failure_threshold=settings.breaker_failure_threshold,
        success_rate_floor=settings.breaker_success_rate_floor,
        min_requests=settings.breaker_min_requests,
        window=settings.breaker_window,
        cooldown_s=settings.breaker_cooldown_s,
    )


def health_store(settings: Settings, engine: Engine) -> HealthStore:
    """Redis when ``settings.redis_url`` is set, else the database behind ``engine``."""
    policy = breaker_policy(settings)
    if settings.redis_url:
        from modelbank.pool.health_redis import RedisHealthStore

        return RedisHealthStore(settings.redis_url, policy=policy)
    from modelbank.pool.health_sql import SqlHealthStore

    return SqlHealthStore(engine, policy=policy)


__all__ = [
    "Delta",
    "Health",
    "HealthStore",
    "Result",
    "Ticket",
    "apply",
    "apply_all",
    "breaker_policy",
    "health_store",
]
