"""What the dashboards share: periods, day lists, names, half-even averages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import Select, Table, func, select
from sqlalchemy.engine import Result
from sqlalchemy.orm import Session

from modelbank.catalog.models import models_table as models
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput

PERIOD_DAYS = {"7d": 7, "30d": 30, "90d": 90, "365d": 365}
"""Dashboard periods → days (the last N UTC days, today included)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A period: the UTC dates from ``start`` to ``end`` (``now``'s day) inclusive."""

    period: str
    start: date
    end: date

    @property
    def days(self) -> list[date]:
        """Every date of the window, oldest first."""
        return dates(self.start, self.end)

    @property
    def since(self) -> datetime:
        """00:00 UTC of ``start``."""
        return datetime.combine(self.start, datetime.min.time(), UTC)


def window(period: str, *, now: datetime | None = None) -> Window:
    """The UTC days of ``period`` ending on ``now``'s day (default: today). Raises
    :class:`InvalidInput` for a period other than ``7d``, ``30d``, ``90d``, ``365d``."""
    days = PERIOD_DAYS.get(period)
    if days is None:
        raise InvalidInput(
            f"period must be one of {', '.join(PERIOD_DAYS)}, got {period!r}", period=period
        )
    end = (now or utcnow()).astimezone(UTC).date()
    return Window(period=period, start=end - timedelta(days=days - 1), end=end)


def dates(start: date, end: date) -> list[date]:
    """Every date from ``start`` to ``end`` inclusive (empty when ``end`` < ``start``)."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def average(total: int, count: int) -> int:
    """``total / count`` rounded half-even to an integer; 0 when ``count`` is 0."""
    return round(Fraction(total, count)) if count else 0


def as_date(value: object) -> date:
    """A rollup ``day`` as read back (a date; text ``YYYY-MM-DD`` on raw SQLite reads)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def model_names(session: Session, model_ids: Iterable[int]) -> dict[int, tuple[str, str, str]]:
    """model id → (slug, name, category), in one query."""
    ids = sorted(set(model_ids))
    if not ids:
        return {}
    return {
        int(r.id): (r.slug, r.name, r.category)
        for r in session.connection().execute(
            select(models.c.id, models.c.slug, models.c.name, models.c.category).where(
                models.c.id.in_(ids)
            )
        )
    }


def all_days(session: Session, table: Table, *, until: date) -> list[date]:
    """Every UTC day from a rollup ``table``'s first row to ``until`` (or its last row, if
    later): the days of "all time", found with two primary-key lookups."""
    # Two scalar subqueries, not min() and max() in one SELECT: SQLite answers a lone min()
    # or max() from the index but scans the whole table for the pair.
    first, last = (
        session.connection()
        .execute(
            select(
                select(func.min(table.c.day)).scalar_subquery(),
                select(func.max(table.c.day)).scalar_subquery(),
            )
        )
        .one()
    )
    if first is None:
        return []
    return dates(as_date(first), max(until, as_date(last)))


def of_user(table: Table, user_id: int, days: Sequence[date], *columns: Any) -> Select[Any]:
    """``SELECT columns FROM table WHERE day IN (days) AND user_id = ?`` on a per-user rollup
    (add a GROUP BY to it): one primary-key probe per day, whatever the number of other
    users."""
    return select(*columns).where(table.c.day.in_(list(days)), table.c.user_id == user_id)


def user_rows(
    session: Session, table: Table, user_id: int, days: Sequence[date], *columns: Any
) -> Result[Any]:
    """The rows of :func:`of_user`."""
    return session.connection().execute(of_user(table, user_id, days, *columns))
