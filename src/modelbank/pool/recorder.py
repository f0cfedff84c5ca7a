"""This process's view of the pool's health and its writes to the shared store (DESIGN §9).

The router asks three things per attempt: may it go (the breaker, from the last snapshot),
how loaded is each candidate, and then records how the attempt went. Doing that with two
database transactions per attempt cost ~5 ms per request on a busy 2-core machine (each
a worker-thread hop and a write lock shared with the charge path), so by default the
recorder writes behind:

- ``begin`` (not a probe) and ``finish`` only touch process memory: the in-flight count and
  the attempt's result go into a pending :class:`~modelbank.pool.health.Delta` per resource,
  and the result is applied at once to this process's own view (so a breaker this process
  trips is honoured by its next request);
- every ``flush_s`` (default 0.1 s) a background task writes the pending deltas to the
  store in one transaction (:meth:`~modelbank.pool.health.HealthStore.record`) on a worker
  thread, and takes the store's answer as the new view (with results that finished during
  the write re-applied on top);
- claiming a half-open probe is never deferred: it is one conditional write in the store,
  so exactly one process wins it.

Other processes therefore see this one's outcomes up to ``flush_s`` later, on top of their
own snapshot TTL. A process that dies loses at most its last ``flush_s`` of health data and
leaves its unfinished attempts counted in flight (they weigh on the load term only). With
``flush_s`` 0 every begin and finish is written at once, as its own transaction.

:meth:`HealthRecorder.aclose` (the app's shutdown) writes what is pending. One recorder per
router, used from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import anyio

from modelbank.pool.breaker import Outcome, claim_probe
from modelbank.pool.health import Delta, Health, HealthStore, Result, Ticket, apply_all

log = logging.getLogger(__name__)

MAX_PENDING_RESULTS = 1_000
"""Results kept per resource while the store cannot be written (the oldest are dropped:
health is advisory, and memory must stay bounded while the database is away)."""


@dataclass(slots=True)
class _Seen:
    """A resource's health as last read or written, with this process's in-flight count at
    that moment (this process's later attempts are added to it)."""

    health: Health
    local_in_flight: int


class HealthRecorder:
    """Reads and writes the shared health for one router (module docstring)."""

    def __init__(
        self, store: HealthStore, clock: Callable[[], datetime], *, flush_s: float = 0.1
    ) -> None:
        self.store = store
        self.clock = clock
        self.flush_s = flush_s
        self._seen: dict[int, _Seen] = {}
        self._flying: dict[int, int] = {}
        self._pending: dict[int, Delta] = {}
        self._flusher: asyncio.Task[None] | None = None

    # -- the view ------------------------------------------------------------------------

    def absorb(self, fresh: Mapping[int, Health]) -> None:
        """Take ``fresh`` health (a snapshot or the store's answer to a flush) as the view,
        with this process's results not yet written applied on top."""
        for rid, health in fresh.items():
            pending = self._pending.get(rid)
            if pending is not None and pending.results:
                health = apply_all(health, pending.results, self.store.policy)
            self._seen[rid] = _Seen(health, self._flying.get(rid, 0))

    def view(self, resource_id: int) -> Health:
        """The resource's health as this process knows it: the last snapshot or write, its
        own results since, and its own attempts in flight since."""
        seen = self._seen.get(resource_id) or _Seen(Health(resource_id), 0)
        extra = self._flying.get(resource_id, 0) - seen.local_in_flight
        if not extra:
            return seen.health
        return replace(seen.health, in_flight=max(seen.health.in_flight + extra, 0))

    def probe_taken(self, resource_id: int) -> None:
        """Another process holds the probe: stop trying to claim it until the next
        snapshot."""
        seen = self._seen.get(resource_id)
        if seen is not None:
            taken = claim_probe(seen.health.breaker, self.clock())
            self._seen[resource_id] = _Seen(
                replace(seen.health, breaker=taken), seen.local_in_flight
            )

    # -- attempts ------------------------------------------------------------------------

    async def begin(self, resource_id: int, *, probe: bool) -> Ticket | None:
        """Count an attempt in flight; a probe is claimed in the store at once (None: lost
        to another process)."""
        # Counted before any await: requests ranked meanwhile see the load.
        self._flying[resource_id] = self._flying.get(resource_id, 0) + 1
        if not probe and self.flush_s > 0:
            self._ensure_flusher()
            self._delta(resource_id).in_flight += 1
            return Ticket(resource_id)
        ticket = None
        try:
            ticket = await anyio.to_thread.run_sync(
                lambda: self.store.begin(resource_id, probe=probe, now=self.clock())
            )
        finally:
            if ticket is None:
                self._flying[resource_id] -= 1
        if ticket is None:
            self.probe_taken(resource_id)
        return ticket

    async def finish(
        self, ticket: Ticket, outcome: Outcome, latency_ms: float, ttft_ms: float | None
    ) -> None:
        """End the attempt. Written behind (no I/O) unless ``flush_s`` is 0; never
        interrupted by cancellation."""
        rid = ticket.resource_id
        self._flying[rid] = max(self._flying.get(rid, 0) - 1, 0)
        result = Result(outcome, self.clock(), latency_ms, ttft_ms, ticket.probe)
        if self.flush_s > 0:
            delta = self._delta(rid)
            delta.in_flight -= 1
            delta.results.append(result)
            seen = self._seen.get(rid) or _Seen(Health(rid), self._flying[rid])
            health = apply_all(seen.health, [result], self.store.policy)
            self._seen[rid] = _Seen(health, seen.local_in_flight)
            return
        with anyio.CancelScope(shield=True):  # a cancelled request still ends its count
            fresh = await anyio.to_thread.run_sync(
                lambda: self.store.record({rid: Delta(-1, [result])})
            )
        self.absorb(fresh)

    async def note(self, resource_id: int, outcome: Outcome) -> None:
        """Record a verdict on the resource outside any attempt (no in-flight change):
        applied to this process's view now and written behind (``flush_s`` 0: at once)."""
        result = Result(outcome, self.clock())
        if self.flush_s > 0:
            self._ensure_flusher()
            self._delta(resource_id).results.append(result)
            seen = self._seen.get(resource_id) or _Seen(Health(resource_id), 0)
            health = apply_all(seen.health, [result], self.store.policy)
            self._seen[resource_id] = _Seen(health, seen.local_in_flight)
            return
        with anyio.CancelScope(shield=True):
            fresh = await anyio.to_thread.run_sync(
                lambda: self.store.record({resource_id: Delta(0, [result])})
            )
        self.absorb(fresh)

    def _delta(self, resource_id: int) -> Delta:
        delta = self._pending.get(resource_id)
        if delta is None:
            delta = self._pending[resource_id] = Delta()
        return delta

    # -- writing behind ------------------------------------------------------------------

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        try:
            while True:
                await anyio.sleep(self.flush_s)
                await self.flush()
        finally:
            # cancelled (shutdown, or the event loop ending): write what is left, here
            self._write(self._take())

    def _take(self) -> dict[int, Delta]:
        batch, self._pending = self._pending, {}
        return batch

    def _write(self, batch: dict[int, Delta]) -> None:
        """:meth:`flush` on this thread (the flusher's last act, at shutdown)."""
        if not batch:
            return
        try:
            fresh = self.store.record(batch)
        except Exception as exc:  # the store is away: keep the batch for the next flush
            log.warning("pool health not written (%s); retrying", type(exc).__name__)
            self._restore(batch)
            return
        self.absorb(fresh)

    async def flush(self) -> None:
        """Write the pending deltas now (a worker thread; one store transaction)."""
        batch = self._take()
        if not batch:
            return
        with anyio.CancelScope(shield=True):
            try:
                fresh = await anyio.to_thread.run_sync(self.store.record, batch)
            except Exception as exc:  # the store is away: keep the batch for the next flush
                log.warning("pool health not written (%s); retrying", type(exc).__name__)
                self._restore(batch)
                return
        self.absorb(fresh)

    def _restore(self, batch: dict[int, Delta]) -> None:
        for rid, old in batch.items():
            delta = self._delta(rid)
            delta.in_flight += old.in_flight
            delta.results[:0] = old.results
            del delta.results[:-MAX_PENDING_RESULTS]

    async def aclose(self) -> None:
        """Stop the background flush and write what is pending."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()


__all__ = ["MAX_PENDING_RESULTS", "HealthRecorder"]
