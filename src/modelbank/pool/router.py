"""The router: which pool resource serves a gateway request, with bounded failover before the
first byte (DESIGN §9).

For a model, the candidates are the ``active`` resources that serve it with pool quota left
(``consumed_uusd < quota_uusd − market_quota_uusd``) and whose breaker admits a request
(closed; open past its cool-down only as the half-open probe, and only if this process wins
the claim). They are ranked by :func:`modelbank.pool.scoring.rank` (a random pick among the
best ``top_k``, then by score), and ``attempt(target)`` is called on each in turn until one
succeeds:

- the attempt raises :class:`~modelbank.pool.breaker.UpstreamFailure` before the first byte
  reaches the client; a caller error is re-raised at once (no failover, not counted); a
  retryable failure moves on to the next candidate, within ``max_attempts`` and the total
  ``deadline_s`` (an attempt still running at the deadline is cancelled);
- every attempt is counted in the shared health (:mod:`.health`): in flight while it runs,
  then its outcome, latency and time to first token (the attempt's value may carry
  ``latency_ms`` / ``ttft_ms`` attributes; otherwise the router's own clock gives the
  latency).

Cost per request: no database round trip in the common case. Each model's candidate list
(with the model's provider cost) and the candidates' health are read once per
``router_cache_ttl_s`` (default 1 s; one load per model at a time) and reused by every request
of this process in between. This process's own attempts and outcomes are applied to that view
at once and written to the shared store behind, every ``router_health_flush_s``
(:mod:`.recorder`), so only other processes' activity is stale, by up to one TTL plus their
flush interval (a breaker another process opened is seen within about a second; a resource
depleted or withdrawn meanwhile may serve up to a second more: the quota booking stays exact).
Claiming a half-open probe is the one write a request waits for. Decrypted provider keys are
kept in memory per (resource id, encrypted token), so a request decrypts nothing; a rotated or
re-deposited key has a new token and is decrypted once. Call :meth:`Router.aclose` at shutdown
to write the pending health.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from modelbank.config import Settings
from modelbank.db.base import utcnow
from modelbank.pool import keys
from modelbank.pool.breaker import Admission, Outcome, UpstreamFailure, admission
from modelbank.pool.health import Health, HealthStore, Ticket
from modelbank.pool.models import resource_models_table as rm
from modelbank.pool.models import resources_table as r
from modelbank.pool.recorder import HealthRecorder
from modelbank.pool.routing import (
    AllAttemptsFailed,
    Attempt,
    NoRoute,
    RouteFailed,
    RouteResult,
    Target,
    route_header,
)
from modelbank.pool.scoring import Candidate, Scored, Weights, rank
from modelbank.pricing import service as pricing
from modelbank.secrets import SecretBox

T = TypeVar("T")

KEY_CACHE_MAX = 10_000
"""Decrypted keys kept at most (then the cache starts over): far more than a pool holds."""


@dataclass(frozen=True, slots=True)
class _Row:
    """A candidate resource as loaded (the key still sealed)."""

    resource_id: int
    owner_id: int | None
    provider: str
    base_url: str
    key_token: str
    key_id: str
    upstream_model: str
    quota_left: float
    cost_uusd_per_mtok: int


_CANDIDATES = (
    select(
        r.c.id,
        r.c.owner_id,
        r.c.provider,
        r.c.base_url,
        r.c.key_encrypted,
        r.c.key_id,
        r.c.quota_uusd,
        r.c.market_quota_uusd,
        r.c.consumed_uusd,
        rm.c.upstream_model,
    )
    .select_from(rm.join(r, r.c.id == rm.c.resource_id))
    .where(
        rm.c.model_id == bindparam("model_id"),
        r.c.status == "active",
        r.c.consumed_uusd < r.c.quota_uusd - r.c.market_quota_uusd,
    )
    .order_by(r.c.id)
)


_ONE_RESOURCE = (
    select(*_CANDIDATES.selected_columns)
    .select_from(rm.join(r, r.c.id == rm.c.resource_id))
    .where(
        rm.c.model_id == bindparam("model_id"),
        r.c.id == bindparam("resource_id"),
        r.c.status.in_(("active", "depleted")),
    )
)
"""The one resource a marketplace allocation names: its pool part may be used up (the
allocation's market part is what serves), so :data:`_CANDIDATES`' quota condition is not
applied; a depleted (pool part used) resource still serves its allocations."""


class Router:
    """Routes requests over the pool. One per process (it holds the caches); async-safe on
    one event loop."""

    def __init__(
        self,
        reads: sessionmaker[Session],
        health: HealthStore,
        box: SecretBox,
        settings: Settings,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``reads``: a session factory for the candidate queries (read-only use);
        ``health``: the shared health store; ``box``: opens the sealed provider keys;
        ``settings``: ``router_*`` fields. Raises ``ValueError`` for bad router weights."""
        self.reads = reads
        self.health = health
        self.box = box
        self.weights = Weights.from_mapping(settings.router_weights)
        self.top_k = settings.router_top_k
        self.max_attempts = settings.router_max_attempts
        self.deadline_s = settings.router_deadline_s
        self.cache_ttl_s = settings.router_cache_ttl_s
        self.rng = rng or random.Random()
        self.clock = clock
        self.recorder = HealthRecorder(health, clock, flush_s=settings.router_health_flush_s)
        self._rows: dict[int, tuple[float, list[_Row]]] = {}
        self._keys: dict[tuple[int, str], str] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        self._loading_loop: asyncio.AbstractEventLoop | None = None

    # -- candidates ----------------------------------------------------------------------

    def _load(self, model_id: int, only: int | None = None) -> tuple[list[_Row], dict[int, Health]]:
        """The model's candidate rows and their health (worker thread; two or three
        queries). ``only``: just that resource (an allocation's), whatever its pool part."""
        with self.reads() as session, session.begin():
            if only is None:
                rows = session.execute(_CANDIDATES, {"model_id": model_id}).all()
            else:
                rows = session.execute(
                    _ONE_RESOURCE, {"model_id": model_id, "resource_id": only}
                ).all()
            price = pricing.current_prices(session, [model_id]).get(model_id)
        cost = 0
        if price is not None:
            per_mtok = price.cost_uusd.input_per_mtok + price.cost_uusd.output_per_mtok
            cost = int(per_mtok.to_integral_value()) if isinstance(per_mtok, Decimal) else 0
        loaded = [
            _Row(
                resource_id=row.id,
                owner_id=row.owner_id,
                provider=row.provider,
                base_url=row.base_url,
                key_token=row.key_encrypted,
                key_id=row.key_id,
                upstream_model=row.upstream_model,
                quota_left=1.0
                if only is not None or row.quota_uusd <= row.market_quota_uusd
                else (row.quota_uusd - row.market_quota_uusd - row.consumed_uusd)
                / (row.quota_uusd - row.market_quota_uusd),
                cost_uusd_per_mtok=cost,
            )
            for row in rows
        ]
        health = self.health.snapshot([row.resource_id for row in loaded])
        return loaded, health

    async def candidates(self, model_id: int) -> list[tuple[_Row, Health]]:
        """The model's candidates with their health (cached up to ``cache_ttl_s``; this
        process's in-flight attempts added to the shared counts)."""
        cached = self._rows.get(model_id)
        if cached is None or cached[0] <= time.monotonic():
            loop = asyncio.get_running_loop()
            if self._loading_loop is not loop:  # locks serve one event loop
                self._loading_loop, self._loading = loop, {}
            lock = self._loading.setdefault(model_id, asyncio.Lock())
            async with lock:  # one load per model at a time; the others reuse it
                cached = self._rows.get(model_id)
                if cached is None or cached[0] <= time.monotonic():
                    rows, snapshot = await self.recorder.load(lambda: self._load(model_id))
                    self.recorder.absorb(snapshot)
                    cached = (time.monotonic() + self.cache_ttl_s, rows)
                    self._rows[model_id] = cached
        return [(row, self.recorder.view(row.resource_id)) for row in cached[1]]

    def _target(self, row: _Row) -> Target:
        cache_key = (row.resource_id, row.key_token)
        api_key = self._keys.get(cache_key)
        if api_key is None:
            if len(self._keys) >= KEY_CACHE_MAX:
                self._keys.clear()
            api_key = self._keys[cache_key] = keys.reveal(self.box, row.key_token, row.key_id)
        return Target(
            resource_id=row.resource_id,
            base_url=row.base_url,
            api_key=api_key,
            upstream_model=row.upstream_model,
            provider=row.provider,
            owner_id=row.owner_id,
        )

    def ranked(
        self, pairs: Sequence[tuple[_Row, Health]], now: datetime
    ) -> tuple[list[Scored], dict[int, tuple[_Row, Admission]]]:
        """Drop the candidates whose breaker refuses, score and rank the rest; a resource
        due for its half-open probe goes first (the probe is a real request: if it fails,
        the request fails over like any other), else an open breaker would never be probed
        while healthier resources serve."""
        admitted: dict[int, tuple[_Row, Admission]] = {}
        scoring: list[Candidate] = []
        for row, health in pairs:
            verdict = admission(health.breaker, now, self.health.policy)
            if verdict is Admission.DENY:
                continue
            admitted[row.resource_id] = (row, verdict)
            scoring.append(
                Candidate(
                    resource_id=row.resource_id,
                    cost_uusd_per_mtok=row.cost_uusd_per_mtok,
                    latency_ms=health.latency_ms,
                    ttft_ms=health.ttft_ms,
                    success_rate=health.breaker.success_rate,
                    in_flight=health.in_flight,
                    quota_left=row.quota_left,
                )
            )
        order = rank(scoring, self.weights, self.rng, self.top_k)
        probes = [s for s in order if admitted[s.resource_id][1] is Admission.PROBE]
        if probes:
            order = [*probes, *(s for s in order if s not in probes)]
        return order, admitted

    # -- health --------------------------------------------------------------------------

    async def report(self, resource_id: int, failure: UpstreamFailure) -> None:
        """Count a failure that came after the route was returned (a stream the upstream
        broke after its first byte: no failover then, but the resource's health should
        know). Caller errors count nothing. Written behind like every result."""
        await self.recorder.note(resource_id, failure.outcome)

    async def flush(self) -> None:
        """Write this process's pending health to the shared store now."""
        await self.recorder.flush()

    async def aclose(self) -> None:
        """Stop the background health writes and write what is pending (app shutdown)."""
        await self.recorder.aclose()

    # -- the request ---------------------------------------------------------------------

    async def route(
        self,
        model_id: int,
        attempt: Callable[[Target], Awaitable[T]],
        *,
        request_id: str | None = None,
        only_resource: int | None = None,
        exclude: Collection[int] = (),
    ) -> RouteResult[T]:
        """Serve one request of ``model_id`` with ``attempt`` (module docstring). Returns
        the :class:`RouteResult`. Raises :class:`NoRoute` (no admissible candidate),
        :class:`AllAttemptsFailed` (attempts, deadline or candidates exhausted; carries the
        attempts), the attempt's :class:`UpstreamFailure` when it is a caller error (its
        ``attempts`` attribute lists the attempts), and whatever else the attempt raises
        (cancellation included; the attempt is then counted as cancelled).
        ``only_resource``: route to that resource alone (a marketplace allocation's; read
        fresh, not cached), with the same health, breaker and attempt accounting.
        ``exclude``: resources not to try (already failed for this request)."""
        if only_resource is None:
            pairs = await self.candidates(model_id)
        else:
            rows, snapshot = await self.recorder.load(lambda: self._load(model_id, only_resource))
            self.recorder.absorb(snapshot)
            pairs = [(row, self.recorder.view(row.resource_id)) for row in rows]
        if exclude:
            pairs = [pair for pair in pairs if pair[0].resource_id not in exclude]
        order, admitted = self.ranked(pairs, self.clock())
        if not order:
            raise NoRoute(f"no resource can serve model {model_id} now", model_id=model_id)
        attempts: list[Attempt] = []
        deadline = time.monotonic() + self.deadline_s
        for scored in order:
            if len(attempts) >= self.max_attempts or time.monotonic() >= deadline:
                break
            row, verdict = admitted[scored.resource_id]
            ticket = await self.recorder.begin(row.resource_id, probe=verdict is Admission.PROBE)
            if ticket is None:
                continue  # another process claimed the probe first
            done = await self._attempt(ticket, self._target(row), attempt, deadline)
            attempts.append(done.record)
            if done.record.failure is None:
                return RouteResult(cast(T, done.value), done.target, attempts, order, request_id)
            if done.record.failure.caller_error:
                done.record.failure.attempts = attempts  # type: ignore[attr-defined]
                raise done.record.failure
            if not done.record.failure.retryable:
                break
        last = attempts[-1].failure if attempts else None
        error = NoRoute if not attempts else AllAttemptsFailed
        raise error(
            f"no upstream served model {model_id}: {len(attempts)} attempt(s)"
            + ("" if last is None else f", last {last.kind}"),
            model_id=model_id,
            attempts=attempts,
            candidates=order,
            last=last,
        )

    async def _attempt(
        self,
        ticket: Ticket,
        target: Target,
        attempt: Callable[[Target], Awaitable[T]],
        deadline: float,
    ) -> _Done[T]:
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(deadline - started, 0.0)):
                value = await attempt(target)
        except UpstreamFailure as failure:
            return await self._failed(ticket, target, failure, started)
        except TimeoutError:
            late = UpstreamFailure(Outcome.UPSTREAM_FAILURE, "deadline", None, retryable=False)
            return await self._failed(ticket, target, late, started)
        except BaseException:
            await self.recorder.finish(ticket, Outcome.CANCELLED, _ms_since(started), None)
            raise
        latency = getattr(value, "latency_ms", None)
        ttft = getattr(value, "ttft_ms", None)
        latency_ms = float(latency) if isinstance(latency, int | float) else _ms_since(started)
        ttft_ms = float(ttft) if isinstance(ttft, int | float) else None
        await self.recorder.finish(ticket, Outcome.SUCCESS, latency_ms, ttft_ms)
        record = Attempt(
            target.resource_id, Outcome.SUCCESS, latency_ms, ttft_ms, None, ticket.probe
        )
        return _Done(record, target, value)

    async def _failed(
        self, ticket: Ticket, target: Target, failure: UpstreamFailure, started: float
    ) -> _Done[Any]:
        latency = _ms_since(started)
        await self.recorder.finish(ticket, failure.outcome, latency, None)
        return _Done(
            Attempt(target.resource_id, failure.outcome, latency, None, failure, ticket.probe),
            target,
            None,
        )


@dataclass(frozen=True, slots=True)
class _Done(Generic[T]):
    record: Attempt
    target: Target
    value: T | None


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000


__all__ = [
    "AllAttemptsFailed",
    "Attempt",
    "NoRoute",
    "RouteFailed",
    "RouteResult",
    "Router",
    "Target",
    "UpstreamFailure",
    "route_header",
]
