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
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

import anyio

from modelbank.pool.breaker import Outcome, claim_probe
from modelbank.pool.health import Delta, Health, HealthStore, Result, Ticket, apply_all

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_PENDING_RESULTS = 1_000
"""Results kept per resource while the store cannot be written (the oldest are dropped:
health is advisory, and memory must stay bounded while the database is away)."""


class HealthRecorder:
    """Reads and writes the shared health for one router (module docstring).

    The view of a resource is the health last read from or written to the store, with this
    process's results since applied on top, and its in-flight count corrected by how many
    of this process's attempts the store does not know of yet (begun or ended since its
    last write)."""

    def __init__(
        self, store: HealthStore, clock: Callable[[], datetime], *, flush_s: float = 0.1
    ) -> None:
        self.store = store
        self.clock = clock
        self.flush_s = flush_s
        self._seen: dict[int, Health] = {}
        self._flying: dict[int, int] = {}
        """This process's attempts under way, per resource."""
        self._told: dict[int, int] = {}
        """How many of them the store counts (its in-flight includes these)."""
        self._pending: dict[int, Delta] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._io: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        """Held while a flush is written or a snapshot read (see :meth:`load`)."""

    # -- the view ------------------------------------------------------------------------

    def absorb(self, fresh: Mapping[int, Health]) -> None:
        """Take ``fresh`` health (a snapshot or the store's answer to a write) as the view,
        with this process's results not yet written applied on top."""
        for rid, health in fresh.items():
            pending = self._pending.get(rid)
            if pending is not None and pending.results:
                health = apply_all(health, pending.results, self.store.policy)
            self._seen[rid] = health

    def view(self, resource_id: int) -> Health:
        """The resource's health as this process knows it (class docstring)."""
        health = self._seen.get(resource_id) or Health(resource_id)
        extra = self._flying.get(resource_id, 0) - self._told.get(resource_id, 0)
        if not extra:
            return health
        return replace(health, in_flight=max(health.in_flight + extra, 0))

    def probe_taken(self, resource_id: int) -> None:
        """Another process holds the probe: stop trying to claim it until the next
        snapshot."""
        health = self._seen.get(resource_id)
        if health is not None:
            taken = claim_probe(health.breaker, self.clock())
            self._seen[resource_id] = replace(health, breaker=taken)

    def _local(self, resource_id: int, result: Result) -> None:
        health = self._seen.get(resource_id) or Health(resource_id)
        self._seen[resource_id] = apply_all(health, [result], self.store.policy)

    def _tell(self, resource_id: int, in_flight: int) -> None:
        self._told[resource_id] = self._told.get(resource_id, 0) + in_flight

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
        else:
            self._tell(resource_id, 1)
        return ticket

    async def finish(
        self, ticket: Ticket, outcome: Outcome, latency_ms: float, ttft_ms: float | None
    ) -> None:
        """End the attempt. Written behind (no I/O) unless ``flush_s`` is 0; never
        interrupted by cancellation."""
        rid = ticket.resource_id
        self._flying[rid] = max(self._flying.get(rid, 0) - 1, 0)
        await self._result(
            rid, -1, Result(outcome, self.clock(), latency_ms, ttft_ms, ticket.probe)
        )

    async def note(self, resource_id: int, outcome: Outcome) -> None:
        """Record a verdict on the resource outside any attempt (no in-flight change):
        applied to this process's view now and written behind (``flush_s`` 0: at once)."""
        await self._result(resource_id, 0, Result(outcome, self.clock()))

    async def _result(self, resource_id: int, in_flight: int, result: Result) -> None:
        if self.flush_s > 0:
            self._ensure_flusher()
            delta = self._delta(resource_id)
            delta.in_flight += in_flight
            delta.results.append(result)
            self._local(resource_id, result)
            return
        with anyio.CancelScope(shield=True):  # a cancelled request still ends its count
            fresh = await anyio.to_thread.run_sync(
                lambda: self.store.record({resource_id: Delta(in_flight, [result])})
            )
        self._tell(resource_id, in_flight)
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
            batch = self._take()
            if batch:
                self._written(batch, self._record(batch))

    def _take(self) -> dict[int, Delta]:
        batch, self._pending = self._pending, {}
        return batch

    def _record(self, batch: dict[int, Delta]) -> dict[int, Health] | None:
        """The store's answer to ``batch``; None when it could not be written."""
        try:
            return self.store.record(batch)
        except Exception as exc:  # the store is away: keep the batch for the next flush
            log.warning("pool health not written (%s); retrying", type(exc).__name__)
            return None

    def _written(self, batch: dict[int, Delta], fresh: dict[int, Health] | None) -> None:
        if fresh is None:
            self._restore(batch)
            return
        for rid, delta in batch.items():
            self._tell(rid, delta.in_flight)
        self.absorb(fresh)

    async def flush(self) -> None:
        """Write the pending deltas now (a worker thread; one store transaction)."""
        if not self._pending:
            return
        with anyio.CancelScope(shield=True):
            async with self._io_lock():
                batch = self._take()
                fresh = await anyio.to_thread.run_sync(self._record, batch)
                self._written(batch, fresh)

    def _io_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._io is None or self._io[0] is not loop:  # a lock serves one event loop
            self._io = (loop, asyncio.Lock())
        return self._io[1]

    async def load(self, read: Callable[[], T]) -> T:
        r"""Run ``read`` (a snapshot of the store, on a worker thread) while no flush is
        being written, so that every result and in-flight change this process took out of
        its pending deltas is already in the store when it is read. The caller then
        :meth:`absorb`\ s the snapshot (before its next await): exact, nothing missed or
        applied twice."""
        async with self._io_lock():
            return await anyio.to_thread.run_sync(read)

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
