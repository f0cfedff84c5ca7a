"""Record, list and export audit records.

:func:`record` is called by the services that change state, in the caller's transaction;
:func:`page` and :func:`export_rows` read them for admins (the API, the dashboard, CSV).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Select, insert, select
from sqlalchemy.orm import Session

from modelbank.audit.context import current_actor
from modelbank.audit.models import audit_records_table as records
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput

MAX_PAGE = 200
"""Records per API page: a page stays small however long the log grows."""
EXPORT_BATCH = 1_000
"""Records read per query while streaming a CSV export."""
CSV_COLUMNS = (
    "id",
    "occurred_at",
    "actor_kind",
    "actor_key_id",
    "actor_user_id",
    "action",
    "target_type",
    "target_id",
    "before",
    "after",
    "request_id",
)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses and named tuples as objects, Decimals as
    strings (exact), datetimes ISO 8601, enums by value, mappings and sequences recursively."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple
        return jsonable(value._asdict())
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def record(
    session: Session,
    action: str,
    target_type: str,
    target_id: int | str | None,
    *,
    before: Any = None,
    after: Any = None,
    now: datetime | None = None,
) -> int:
    """Append one audit record for ``action`` (a stable dotted name, e.g. ``price.set``) on
    ``target_type``/``target_id``, by the :func:`~modelbank.audit.context.current_actor`,
    with the state ``before`` and ``after`` (JSON-able; None when there is none). In the
    caller's transaction: rolled back with the action. Returns the record's id."""
    actor = current_actor()
    result = session.connection().execute(
        insert(records)
        .values(
            occurred_at=now or utcnow(),
            actor_kind=actor.kind,
            actor_key_id=actor.key_id,
            actor_user_id=actor.user_id,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            before=jsonable(before),
            after=jsonable(after),
            request_id=actor.request_id,
        )
        .returning(records.c.id)
    )
    return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records to read: by actor kind, actor key id, actor user id, action (exact, or
    a prefix ending in ``.``: ``payout.``), target, and ``occurred_at`` in [since, until).
    Raises :class:`InvalidInput` for an empty time range."""

    actor_kind: str | None = None
    actor_key_id: int | None = None
    actor_user_id: int | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise InvalidInput("the time range is empty: 'to' must be after 'from'")

    def apply(self, query: Select[Any]) -> Select[Any]:
        """``query`` narrowed to the records this filter selects."""
        c = records.c
        conditions = [
            (self.actor_kind, c.actor_kind),
            (self.actor_key_id, c.actor_key_id),
            (self.actor_user_id, c.actor_user_id),
            (self.target_type, c.target_type),
            (self.target_id, c.target_id),
        ]
        for value, column in conditions:
            if value is not None:
                query = query.where(column == value)
        if self.action is not None:
            if self.action.endswith("."):
                query = query.where(c.action.startswith(self.action, autoescape=True))
            else:
                query = query.where(c.action == self.action)
        if self.since is not None:
            query = query.where(c.occurred_at >= self.since)
        if self.until is not None:
            query = query.where(c.occurred_at < self.until)
        return query


def page(
    session: Session, where: AuditFilter, *, before_id: int | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first: up to ``limit`` (1…:data:`MAX_PAGE`) records matching ``where`` with
    ids below ``before_id``; returns (records as dicts, the id to pass as ``before_id`` for
    the next page or None at the end)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1…{MAX_PAGE}", limit=limit)
    query = where.apply(select(records)).order_by(records.c.id.desc()).limit(limit + 1)
    if before_id is not None:
        query = query.where(records.c.id < before_id)
    rows = [dict(row) for row in session.execute(query).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (int(rows[-1]["id"]) if more else None)


def export_rows(session: Session, where: AuditFilter) -> Iterator[dict[str, Any]]:
    """Every record matching ``where``, oldest first, read :data:`EXPORT_BATCH` at a time."""
    after = 0
    while True:
        query = (
            where.apply(select(records))
            .where(records.c.id > after)
            .order_by(records.c.id)
            .limit(EXPORT_BATCH)
        )
        rows = [dict(row) for row in session.execute(query).mappings()]
        yield from rows
        if len(rows) < EXPORT_BATCH:
            return
        after = int(rows[-1]["id"])


def csv_lines(rows: Iterator[Mapping[str, Any]]) -> Iterator[str]:
    """CSV text of ``rows`` (header first; before/after as compact JSON), line by line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = []
        for column in CSV_COLUMNS:
            value = row[column]
            if column in ("before", "after"):
                value = "" if value is None else json.dumps(value, sort_keys=True)
            elif isinstance(value, datetime):
                value = value.isoformat()
            values.append("" if value is None else value)
        writer.writerow(values)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()
