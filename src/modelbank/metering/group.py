"""Group commit for single usage events (DESIGN §16).

One transaction per event is the main cost of charging: on SQLite most of it is the fixed
work of a transaction (its queries and COMMIT), on PostgreSQL the round trips and the
commit's flush. :class:`GroupCommitter` lets many threads (or asyncio tasks) each charge one
event while a single background thread charges them together: it collects the events that
arrive within ``max_wait_s`` of the oldest waiting one (at most ``max_batch``), charges them
with :func:`~modelbank.metering.service.charge_batch` in one transaction, commits once and
then answers every caller.

Each caller sees what :func:`~modelbank.metering.service.charge` would have given it: the
``charged`` or ``replayed`` :class:`~modelbank.metering.service.ChargeResult`, or the same
:class:`~modelbank.errors.DomainError` (``InsufficientFunds``, ``IdempotencyConflict``…)
for its event, which wrote nothing. Events are charged in arrival order, so a wallet that
runs dry rejects the later ones, as sequential ``charge`` calls would. Nothing is answered
before its batch is committed: a ``charged`` result is durable as far as the database's
COMMIT is. When the batch's transaction fails as a whole (a database error), nothing of it
was charged and each of its events is charged again alone, in its own transaction, so that
one event's trouble never fails another caller's charge; retrying is safe (idempotency).

Usage::

    committer = GroupCommitter(session_factory(engine))
    result = committer.submit(event)             # from any thread; blocks ~max_wait_s + commit
    result = await committer.submit_async(event)  # from a coroutine, without blocking the loop
    committer.close()                            # charges what is queued, then stops
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy.orm import Session

from modelbank.metering.events import MAX_BATCH_EVENTS, ChargeResult, UsageEvent
from modelbank.metering.pipeline import charge_batch_with_errors
from modelbank.observability.metrics import GROUP_COMMIT_BATCH

log = logging.getLogger(__name__)

DEFAULT_MAX_WAIT_S = 0.002
"""How long the oldest waiting event may wait for company before its batch is charged."""


class CommitterClosed(RuntimeError):
    """:meth:`GroupCommitter.submit` after :meth:`GroupCommitter.close`."""


@dataclass(slots=True)
class _Pending:
    event: UsageEvent
    future: Future[ChargeResult]
    queued_at: float  # time.monotonic()


_STOP = object()


class GroupCommitter:
    """Charges single events submitted from many threads in shared transactions.

    ``session_factory``: makes a new :class:`~sqlalchemy.orm.Session` (e.g.
    :func:`modelbank.db.engine.session_factory`); one session and one transaction per batch.
    ``max_wait_s`` (≥ 0, seconds): how long the oldest queued event waits for others before
    its batch is charged; 0 charges whatever is queued at once. ``max_batch``: events per
    transaction, 1…:data:`~modelbank.metering.service.MAX_BATCH_EVENTS`.

    Thread-safe. Starts its background thread at once; :meth:`close` (or leaving a ``with``
    block) stops it after charging everything submitted before. Raises ``ValueError`` for
    out-of-range settings.
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_batch: int = MAX_BATCH_EVENTS,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH_EVENTS:
            raise ValueError(f"max_batch must be 1…{MAX_BATCH_EVENTS}, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be ≥ 0, got {max_wait_s}")
        self._factory = session_factory
        self._max_wait_s = max_wait_s
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0
        """Transactions run so far (committed or failed)."""
        self.events = 0
        """Events handed to those transactions."""
        self._thread = threading.Thread(
            target=self._run, name="modelbank-group-commit", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------ callers

    def submit_future(self, event: UsageEvent) -> Future[ChargeResult]:
        """Queue ``event``; return a future of its :class:`ChargeResult` (or its error, as
        :func:`~modelbank.metering.service.charge` raises it). Cancelling the future before
        its batch starts withdraws the event. Raises :class:`CommitterClosed`."""
        future: Future[ChargeResult] = Future()
        with self._lock:
            if self._closed:
                raise CommitterClosed("the group committer is closed")
            self._queue.put(_Pending(event, future, time.monotonic()))
        return future

    def submit(self, event: UsageEvent) -> ChargeResult:
        """Charge ``event`` in the next group transaction; block until it is committed.

        Returns the ``charged`` or ``replayed`` result. Raises what
        :func:`~modelbank.metering.service.charge` raises for this event
        (:class:`~modelbank.metering.errors.InvalidUsage`,
        :class:`~modelbank.ledger.errors.InsufficientFunds`,
        :class:`~modelbank.errors.IdempotencyConflict`, ``ModelNotFound``, ``NoPrice``,
        ``UserNotFound``), the database error that failed its whole batch, or
        :class:`CommitterClosed`.
        """
        return self.submit_future(event).result()

    async def submit_async(self, event: UsageEvent) -> ChargeResult:
        """:meth:`submit` for coroutines: awaits the batch without blocking the event loop.
        Same result and errors. Cancelling the task before its batch starts withdraws the
        event; once its batch has started, the event is charged regardless."""
        return await asyncio.wrap_future(self.submit_future(event))

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting events, charge the ones already queued, stop the thread.

        Idempotent. ``timeout`` (seconds) bounds the wait for the thread; None waits."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def __enter__(self) -> GroupCommitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ background thread

    def _run(self) -> None:
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                assert isinstance(first, _Pending)
                batch = [first]
                deadline = first.queued_at + self._max_wait_s
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        try:
                            item = self._queue.get(timeout=remaining)
                        except queue.Empty:
                            break
                    if item is _STOP:
                        stopping = True  # charge this batch, then stop: nothing follows
                        break
                    assert isinstance(item, _Pending)
                    batch.append(item)
                self._charge(batch)
        finally:
            self._fail_leftovers()

    def _charge(self, batch: list[_Pending]) -> None:
        # A future cancelled while queued is dropped; after this no caller can cancel.
        live = [p for p in batch if p.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batches += 1
        self.events += len(live)
        GROUP_COMMIT_BATCH.observe(len(live))
        try:
            with self._factory() as session, session.begin():
                results, errors = charge_batch_with_errors(session, [p.event for p in live])
        except Exception as exc:
            if len(live) == 1:
                live[0].future.set_exception(exc)
                return
            # The shared transaction failed as a whole (a database error: a deadlock, a
            # lost connection…). One event's trouble must not fail the others: charge each
            # alone, so that each caller gets its own outcome.
            log.warning(
                "group commit of %d events failed (%r): charging each alone", len(live), exc
            )
            for pending in live:
                self._charge_alone(pending)
            return
        except BaseException as exc:
            for pending in live:
                pending.future.set_exception(exc)
            raise
        for pending, result, error in zip(live, results, errors, strict=True):
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(result)

    def _charge_alone(self, pending: _Pending) -> None:
        self.batches += 1
        try:
            with self._factory() as session, session.begin():
                results, errors = charge_batch_with_errors(session, [pending.event])
        except Exception as exc:  # this event's own transaction failed: it gets the error
            pending.future.set_exception(exc)
            return
        if errors[0] is not None:
            pending.future.set_exception(errors[0])
        else:
            pending.future.set_result(results[0])

    def _fail_leftovers(self) -> None:
        """After the thread stops (normally nothing is left): fail what is still queued."""
        with self._lock:
            self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Pending) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(CommitterClosed("the group committer stopped"))
