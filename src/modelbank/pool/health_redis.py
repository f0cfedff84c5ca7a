"""The Redis health store (``MODELBANK_REDIS_URL``; see :mod:`modelbank.pool.health` for the
contract).

Per resource: a hash ``<prefix>health:<id>`` (breaker, counters, EWMAs; times as Unix
seconds) and a counter ``<prefix>inflight:<id>`` (``INCR``/``DECR``, atomic without a
transaction, kept apart so that in-flight traffic does not break the hash's ``WATCH``).
``finish`` and the probe claim read the hash under ``WATCH``, compute the new state with
:func:`modelbank.pool.health.apply` / :func:`modelbank.pool.breaker.claim_probe`, and write it
in ``MULTI``/``EXEC``; when another process wrote the hash in between, ``EXEC`` fails and the
step is decided again on the new state (so of two processes claiming one probe, exactly one
wins). Under heavy traffic on one resource a ``finish`` may retry a few times; each retry is
one more round trip on loopback (~0.1 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import redis

from modelbank.db.base import utcnow
from modelbank.pool.breaker import (
    Admission,
    Breaker,
    BreakerPolicy,
    Outcome,
    State,
    admission,
    claim_probe,
)
from modelbank.pool.health import Delta, Health, Result, Ticket, apply_all

MAX_OPTIMISTIC_RETRIES = 100
"""WATCH/EXEC rounds before giving up (each lost round means another process progressed)."""

DEFAULT_PREFIX = "modelbank:pool:"


def _time(value: datetime | None) -> str:
    return "" if value is None else repr(value.timestamp())


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _encode(health: Health) -> dict[str, str]:
    b = health.breaker
    return {
        "breaker": b.state.value,
        "opened_at": _time(b.opened_at),
        "consecutive_failures": str(b.consecutive_failures),
        "success_rate": repr(b.success_rate),
        "requests": str(b.requests),
        "failures": str(b.failures),
        "latency_ms": "" if health.latency_ms is None else repr(health.latency_ms),
        "ttft_ms": "" if health.ttft_ms is None else repr(health.ttft_ms),
        "updated_at": _time(health.updated_at),
    }


def _decode(resource_id: int, fields: dict[str, str], in_flight: str | None) -> Health:
    if not fields:
        return Health(resource_id, in_flight=max(int(in_flight or 0), 0))
    return Health(
        resource_id=resource_id,
        breaker=Breaker(
            state=State(fields["breaker"]),
            opened_at=_parse_time(fields.get("opened_at")),
            consecutive_failures=int(fields["consecutive_failures"]),
            success_rate=float(fields["success_rate"]),
            requests=int(fields["requests"]),
            failures=int(fields["failures"]),
        ),
        in_flight=max(int(in_flight or 0), 0),
        latency_ms=_float(fields.get("latency_ms")),
        ttft_ms=_float(fields.get("ttft_ms")),
        updated_at=_parse_time(fields.get("updated_at")),
    )


class RedisHealthStore:
    """Health in Redis, shared by every process that uses the same server and prefix."""

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        *,
        policy: BreakerPolicy | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        """``url_or_client``: ``redis://host:port/db`` or a client (``decode_responses``
        is required of a client)."""
        self.policy = policy or BreakerPolicy()
        self.prefix = prefix
        if isinstance(url_or_client, str):
            self.client: redis.Redis = redis.Redis.from_url(
                url_or_client, decode_responses=True, socket_timeout=2.0
            )
        else:
            self.client = url_or_client

    def _keys(self, resource_id: int) -> tuple[str, str]:
        return f"{self.prefix}health:{resource_id}", f"{self.prefix}inflight:{resource_id}"

    def begin(
        self, resource_id: int, *, probe: bool = False, now: datetime | None = None
    ) -> Ticket | None:
        """See :meth:`modelbank.pool.health.HealthStore.begin`."""
        health_key, flight_key = self._keys(resource_id)
        if not probe:
            self.client.incr(flight_key)
            return Ticket(resource_id)
        now = now or utcnow()
        with self.client.pipeline() as pipe:
            for _ in range(MAX_OPTIMISTIC_RETRIES):
                try:
                    pipe.watch(health_key)  # type: ignore[no-untyped-call]
                    fields: dict[str, str] = pipe.hgetall(health_key)  # type: ignore[assignment]
                    breaker = _decode(resource_id, fields, None).breaker
                    if not fields or admission(breaker, now, self.policy) is not Admission.PROBE:
                        pipe.unwatch()
                        return None
                    claimed = claim_probe(breaker, now)
                    pipe.multi()
                    state = {"breaker": claimed.state.value, "opened_at": _time(now)}
                    pipe.hset(health_key, mapping=cast(Any, state))
                    pipe.incr(flight_key)
                    pipe.execute()
                    return Ticket(resource_id, probe=True)
                except redis.WatchError:
                    continue  # the hash moved: decide again on what it holds now
        return None

    def finish(
        self,
        ticket: Ticket,
        outcome: Outcome,
        *,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        now: datetime | None = None,
    ) -> Health:
        """See :meth:`modelbank.pool.health.HealthStore.finish`."""
        result = Result(outcome, now or utcnow(), latency_ms, ttft_ms, ticket.probe)
        return self.record({ticket.resource_id: Delta(-1, [result])})[ticket.resource_id]

    def record(self, deltas: Mapping[int, Delta]) -> dict[int, Health]:
        """See :meth:`modelbank.pool.health.HealthStore.record`: one optimistic
        transaction per resource."""
        return {rid: self._record_one(rid, delta) for rid, delta in sorted(deltas.items())}

    def _record_one(self, resource_id: int, delta: Delta) -> Health:
        health_key, flight_key = self._keys(resource_id)
        with self.client.pipeline() as pipe:
            for _ in range(MAX_OPTIMISTIC_RETRIES):
                try:
                    pipe.watch(health_key)  # type: ignore[no-untyped-call]
                    fields: dict[str, str] = pipe.hgetall(health_key)  # type: ignore[assignment]
                    current = _decode(resource_id, fields, None)
                    new = apply_all(current, delta.results, self.policy)
                    pipe.multi()
                    if new != current:
                        pipe.hset(health_key, mapping=cast(Any, _encode(new)))
                    pipe.incrby(flight_key, delta.in_flight)
                    results: list[Any] = pipe.execute()
                    flying = int(results[-1])
                    if flying < 0:  # the counter was reset while attempts ran
                        self.client.incrby(flight_key, -flying)
                    return replace(new, in_flight=max(flying, 0))
                except redis.WatchError:
                    continue  # the hash moved: apply the results again on what it holds now
        raise RuntimeError(
            f"resource {resource_id}: health update lost {MAX_OPTIMISTIC_RETRIES} races"
        )

    def snapshot(self, resource_ids: list[int]) -> dict[int, Health]:
        """See :meth:`modelbank.pool.health.HealthStore.snapshot` (one pipelined round
        trip)."""
        if not resource_ids:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for rid in resource_ids:
                health_key, flight_key = self._keys(rid)
                pipe.hgetall(health_key)
                pipe.get(flight_key)
            replies = pipe.execute()
        return {
            rid: _decode(rid, replies[2 * i], replies[2 * i + 1])
            for i, rid in enumerate(resource_ids)
        }

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()


__all__ = ["DEFAULT_PREFIX", "RedisHealthStore"]
