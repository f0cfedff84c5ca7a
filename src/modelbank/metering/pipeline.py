"""The charging pipeline (DESIGN §6), read top to bottom::

    validate → lock wallets → replay known keys → load the batch context
             → decide each event → post the charge lines → answer repeats

:func:`charge_batch` is the one implementation; :func:`charge` is a batch of one that raises
instead of reporting. Per batch, whatever its size, the pipeline runs a fixed number of
statements (DESIGN §16: per-event round trips are the main cost). Everything runs in the
caller's transaction; nothing commits here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from modelbank.db import epoch as epochs
from modelbank.db import fast
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.errors import DomainError
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.metering import context, reference, replays
from modelbank.metering.batch import Batch
from modelbank.metering.decide import ChargeLine, Repeat, decide
from modelbank.metering.errors import BatchTooLarge
from modelbank.metering.events import (
    MAX_BATCH_EVENTS,
    ChargeResult,
    UsageEvent,
    request_hash,
    validate,
)
from modelbank.metering.post import post, usage_ids_read
from modelbank.observability import metrics
from modelbank.wallets import grants


def charge(session: Session, event: UsageEvent, *, now: datetime | None = None) -> ChargeResult:
    """Charge one usage event (DESIGN §6) in the caller's transaction.

    Returns a ``charged`` or ``replayed`` :class:`ChargeResult`. Raises, writing nothing:
    :class:`~modelbank.metering.errors.InvalidUsage`,
    :class:`~modelbank.ledger.errors.InsufficientFunds`,
    :class:`~modelbank.errors.IdempotencyConflict` (key reused with another body),
    :class:`~modelbank.catalog.errors.ModelNotFound`, :class:`~modelbank.pricing.errors.NoPrice`,
    :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.catalog.errors.AccessRequired` (a premium model without bought access),
    :class:`~modelbank.auth.errors.KeyLimitReached` (the event's ``limited_key_id`` is at its
    spend limit), and for a hold capture :class:`~modelbank.ledger.errors.HoldNotPending`,
    :class:`~modelbank.ledger.errors.HoldExpired`,
    :class:`~modelbank.ledger.errors.HoldAmountExceeded`.
    """
    return charge_batch_with_errors(session, [event], now=now, raise_errors=True)[0][0]


def charge_batch(
    session: Session,
    events: Sequence[UsageEvent],
    *,
    now: datetime | None = None,
    _raise: bool = False,
) -> list[ChargeResult]:
    """Charge up to 1,000 events in the caller's transaction; one result per event, in order.

    Each event is independent: a rejected one (``invalid_usage``, ``insufficient_funds``,
    ``model_not_found``, ``no_price``, ``user_not_found``, ``idempotency_key_reused``,
    ``model_access_required``, ``key_limit_reached``) writes nothing and does not stop the
    others. Events are charged in order, so a wallet that runs dry rejects its later events
    (and a limited key's later events past its limit). A key repeated
    inside the batch replays the first. Raises :class:`BatchTooLarge`.
    """
    return charge_batch_with_errors(session, events, now=now, raise_errors=_raise)[0]


def charge_batch_with_errors(
    session: Session,
    events: Sequence[UsageEvent],
    *,
    now: datetime | None = None,
    raise_errors: bool = False,
) -> tuple[list[ChargeResult], list[DomainError | None]]:
    """:func:`charge_batch` that also returns, for each ``rejected`` result, the
    :class:`~modelbank.errors.DomainError` that rejected it (None for the others), so that a
    caller charging on behalf of others (:mod:`modelbank.metering.group`) can raise what
    :func:`charge` would. With ``raise_errors`` the first rejection is raised instead.
    Raises :class:`BatchTooLarge`.
    """
    if len(events) > MAX_BATCH_EVENTS:
        raise BatchTooLarge(f"at most {MAX_BATCH_EVENTS} events per batch, got {len(events)}")
    now = now or utcnow()
    batch = Batch(events, raise_errors=raise_errors)
    _validate(batch)
    conn = fast.connection(session)
    try:
        _read_ahead(session, batch)
        results, errors = _charge(session, batch, now)
    finally:
        fast.forget_reads_ahead(conn)  # rows read ahead never outlive the batch
    metrics.count_on_commit(session, [r.status for r in results])
    return results, errors


def _charge(
    session: Session, batch: Batch, now: datetime
) -> tuple[list[ChargeResult], list[DomainError | None]]:
    """The steps after validation (see the module doc)."""
    wallets = context.lock_wallets(session, batch)
    replays.replay_known(session, batch)
    pending = batch.open()
    if not pending:
        return batch.answers()
    ctx = context.load(session, batch, wallets, pending, now=now)
    while True:
        lines, repeats = _decide(ctx, pending)
        if not post(session, ctx, lines):
            break
        # Another transaction committed some of these keys after they were looked up:
        # answer those events from the stored rows (replay or 409), decide the rest again.
        replays.replay_known(session, batch)
        pending = [i for i in pending if batch.results[i] is None]
        ctx.restart()
    replays.answer_repeats(batch, repeats, lines)
    return batch.answers()


def _decide(ctx: context.BatchContext, pending: list[int]) -> tuple[list[ChargeLine], list[Repeat]]:
    """Decide the pending events in order; reject the refused ones at once."""
    lines: list[ChargeLine] = []
    repeats: list[Repeat] = []
    for index in pending:
        decision = decide(ctx, index)
        if isinstance(decision, ChargeLine):
            lines.append(decision)
        elif isinstance(decision, Repeat):
            repeats.append(decision)
        else:
            ctx.batch.reject(decision.index, decision.error)
    return lines, repeats


def _read_ahead(session: Session, batch: Batch) -> None:
    """PostgreSQL: send the reads the batch's first steps will run in one round trip
    (:func:`~modelbank.db.fast.read_ahead`), in the order they run them: lock the wallets,
    look the keys up, read the open grants, lock the models' aggregate rows (when the cached
    reference data knows every model), read the reference epoch, reserve usage ids. What a
    step then asks differently (a user without a wallet, replays found) it reads itself."""
    conn = fast.connection(session)
    if conn.dialect.name != "postgresql":
        return
    events = batch.events
    open_events = batch.open()
    if not open_events:
        return
    users = {events[i].user_id for i in open_events}
    reads = [
        ledger.lock_user_accounts_read(conn.dialect.name, users, AccountCode.USER_WALLET),
        replays.keys_read(batch),
        grants.open_grants_read(users),
    ]
    refs = {events[i].model for i in open_events}
    snap = reference.peek(session, refs)
    if snap is not None:
        ids = {info.id for info in snap.resolve(refs).values()}
        reads += [earnings.use_counts_read(conn.dialect.name, ids), epochs.READ]
    reads.append(usage_ids_read(len(events)))
    fast.read_ahead(conn, reads)


def _validate(batch: Batch) -> None:
    """Reject invalid events; fingerprint the valid ones."""
    for i, event in enumerate(batch.events):
        try:
            validate(event)
            batch.hashes[i] = request_hash(event)
        except DomainError as exc:
            batch.reject(i, exc)
