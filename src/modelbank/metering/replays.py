"""Idempotent replays (DESIGN §3, §6): an event whose key was charged before gets the first
result again when its body is the same (``replayed``), and a typed
:class:`~modelbank.errors.IdempotencyConflict` when it is not; a key repeated inside one
batch is answered after posting, from the first event that charged it.

Keys are unique in ``usage_events``; each is bound to the SHA-256 of its event's canonical
body (:func:`~modelbank.metering.events.request_hash`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy.orm import Session

from modelbank.db.fast import FastSQL, Read
from modelbank.db.fast import connection as fast_connection
from modelbank.earnings import service as earnings
from modelbank.errors import DomainError, IdempotencyConflict
from modelbank.metering.batch import Batch
from modelbank.metering.decide import ChargeLine, Repeat
from modelbank.metering.events import ChargeResult, UsageEvent, as_replay
from modelbank.metering.post import charged

_FIND_KEYS = FastSQL(
    "SELECT id, idempotency_key, request_hash, model_id, charge_ucr, cost_uusd,"
    " balance_after_ucr, price_version_id FROM usage_events WHERE idempotency_key IN ({in})"
)


class _Stored(NamedTuple):
    id: int
    idempotency_key: str
    request_hash: str
    model_id: int
    charge_ucr: int
    cost_uusd: int
    balance_after_ucr: int
    price_version_id: int


def keys_read(batch: Batch) -> Read:
    """The read :func:`replay_known` runs for the batch's open events."""
    keys = sorted({batch.events[i].idempotency_key for i in batch.open()})
    return _FIND_KEYS.read(keys, size=len(keys))


def replay_known(session: Session, batch: Batch) -> None:
    """Answer every open event of ``batch`` whose key is already stored: its first result
    again, or a conflict. One query for the keys, one for the earnings of those found."""
    open_events = batch.open()
    read = keys_read(batch)
    if not read.size:
        return
    found = read.sql.execute(fast_connection(session), read.params, size=read.size).fetchall()
    rows = {row[1]: _Stored(*row) for row in found}
    if not rows:
        return
    paid = earnings.earnings_by_usage(session, (int(row.id) for row in rows.values()))
    for i in open_events:
        event = batch.events[i]
        row = rows.get(event.idempotency_key)
        if row is None:
            continue
        if row.request_hash != batch.hashes[i]:
            batch.reject(i, conflict(event))
            continue
        batch.answer(
            i,
            ChargeResult(
                idempotency_key=event.idempotency_key,
                status="replayed",
                usage_id=int(row.id),
                model_id=int(row.model_id),
                charge_ucr=int(row.charge_ucr),
                cost_uusd=int(row.cost_uusd),
                earnings=tuple(paid.get(int(row.id), [])),
                balance_ucr=int(row.balance_after_ucr),
                price_version_id=int(row.price_version_id),
            ),
        )


def answer_repeats(batch: Batch, repeats: Sequence[Repeat], lines: Sequence[ChargeLine]) -> None:
    """Answer keys repeated inside the batch from the (posted) line of their first event."""
    by_index = {line.index: line for line in lines}
    for repeat in repeats:
        first = by_index.get(repeat.first)
        event = batch.events[repeat.index]
        if first is None:
            batch.reject(repeat.index, DomainError("the first event with this key was rejected"))
        elif first.request_hash != batch.hashes[repeat.index]:
            batch.reject(repeat.index, conflict(event))
        else:
            batch.answer(repeat.index, as_replay(charged(first)))


def conflict(event: UsageEvent) -> IdempotencyConflict:
    """The error of a key reused with a different body."""
    return IdempotencyConflict(
        f"idempotency key {event.idempotency_key!r} was used with a different usage event",
        idempotency_key=event.idempotency_key,
    )
