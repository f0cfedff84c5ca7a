"""Per-key spend limits (DESIGN §11, issue 13): a key can carry ``limit_ucr`` µcr per reset
period (UTC calendar day, ISO week from Monday, calendar month, or ``never``), so that a user
can hand a key to an app without handing it the whole wallet.

The counters live on the key's row (``api_keys``): ``spent_ucr`` (charges made with the key
in the period that began at ``period_start``) and ``reserved_ucr`` (pending holds placed with
it, whatever their period). The rule, kept by every statement here:

    spent_ucr (of the current period) + reserved_ucr ≤ limit_ucr

Each change is **one UPDATE** run in the charge's own transaction, so the counter and the
ledger commit or roll back together, and two concurrent charges can never both pass a check
made before either wrote (no check-then-act). The period rollover is decided in the same
statement: the caller binds the start of the current day, week and month (from its clock,
so tests can freeze it), SQL picks the one of the key's period and, when the stored
``period_start`` is older, counts ``spent_ucr`` from zero and moves ``period_start``.

* :func:`count_charge`: a charge made with the key (conditional: refused over the limit);
* :func:`reserve_hold`: a hold placed with the key (conditional: the hold counts at once);
* :func:`settle_hold`: the hold is captured: its reservation goes, the charge (≤ held) is
  spent (unconditional: it fitted when reserved);
* :func:`release_hold`: the hold is voided or expired: its reservation goes;
* :func:`set_limit` / :func:`remove_limit`: the owner edits the key's limit (issue 13).
* :func:`refund_charge`: a charge counted on the key is refunded: the refunded µcr leave
  ``spent_ucr`` again, only while the refund falls in the charge's period (a refund of
  last month's charge never raises this month's allowance), never below 0.

Keys without a limit never reach this module: the caller's principal says whether its key
is limited, and the charge pipeline runs no statement for the others.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Connection, bindparam, case, or_, select, update

from modelbank.auth.errors import KeyLimitReached
from modelbank.auth.models import api_keys_table as keys
from modelbank.db.base import UTCDateTime


class LimitPeriod(StrEnum):
    """When a key's spent counter starts again from zero (UTC calendar periods)."""

    DAY = "day"
    """Every day at 00:00 UTC."""
    WEEK = "week"
    """Every Monday at 00:00 UTC (ISO weeks)."""
    MONTH = "month"
    """The first of every month at 00:00 UTC."""
    NEVER = "never"
    """Never: the limit is a lifetime budget of the key."""


NEVER_START = datetime(1970, 1, 1, tzinfo=UTC)
"""The one period of a ``never`` key starts here (any fixed instant would do)."""


def period_start(period: LimitPeriod | str, now: datetime) -> datetime:
    """The start (UTC) of the period of kind ``period`` that contains ``now`` (aware)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    match LimitPeriod(period):
        case LimitPeriod.DAY:
            return day
        case LimitPeriod.WEEK:
            return day - timedelta(days=day.weekday())
        case LimitPeriod.MONTH:
            return day.replace(day=1)
        case LimitPeriod.NEVER:
            return NEVER_START


def next_reset(period: LimitPeriod | str, now: datetime) -> datetime | None:
    """When the period containing ``now`` ends and the spent counter starts again (None for
    ``never``)."""
    start = period_start(period, now)
    match LimitPeriod(period):
        case LimitPeriod.DAY:
            return start + timedelta(days=1)
        case LimitPeriod.WEEK:
            return start + timedelta(days=7)
        case LimitPeriod.MONTH:
            days = calendar.monthrange(start.year, start.month)[1]
            return start + timedelta(days=days)
        case LimitPeriod.NEVER:
            return None


def _starts(now: datetime) -> dict[str, Any]:
    """The bind values of the current periods' starts."""
    return {
        "day_start": period_start(LimitPeriod.DAY, now),
        "week_start": period_start(LimitPeriod.WEEK, now),
        "month_start": period_start(LimitPeriod.MONTH, now),
        "never_start": NEVER_START,
    }


# -- the statements ---------------------------------------------------------------------------

_KEY = bindparam("key_id", type_=BigInteger())
_AMOUNT = bindparam("amount", type_=BigInteger())
_HELD = bindparam("held", type_=BigInteger())
_CURRENT_START = case(
    (keys.c.limit_period == LimitPeriod.DAY.value, bindparam("day_start", type_=UTCDateTime())),
    (keys.c.limit_period == LimitPeriod.WEEK.value, bindparam("week_start", type_=UTCDateTime())),
    (
        keys.c.limit_period == LimitPeriod.MONTH.value,
        bindparam("month_start", type_=UTCDateTime()),
    ),
    else_=bindparam("never_start", type_=UTCDateTime()),
)
"""The start of the key's current period, chosen in SQL by the key's own period."""
_ROLLED = or_(keys.c.period_start.is_(None), keys.c.period_start < _CURRENT_START)
"""The stored counter belongs to an earlier period."""
_SPENT_NOW = case((_ROLLED, 0), else_=keys.c.spent_ucr)
"""µcr spent in the current period (the stored counter, or 0 after a rollover)."""
_ROLL = {"spent_ucr": _SPENT_NOW, "period_start": _CURRENT_START}

_COUNT_CHARGE = (
    update(keys)
    .where(
        keys.c.id == _KEY,
        keys.c.limit_ucr.is_not(None),
        _SPENT_NOW + keys.c.reserved_ucr + _AMOUNT <= keys.c.limit_ucr,
    )
    .values(spent_ucr=_SPENT_NOW + _AMOUNT, period_start=_CURRENT_START)
)
_RESERVE_HOLD = (
    update(keys)
    .where(
        keys.c.id == _KEY,
        keys.c.limit_ucr.is_not(None),
        _SPENT_NOW + keys.c.reserved_ucr + _AMOUNT <= keys.c.limit_ucr,
    )
    .values(reserved_ucr=keys.c.reserved_ucr + _AMOUNT, **_ROLL)
)
_SETTLE_HOLD = (
    update(keys)
    .where(keys.c.id == _KEY)
    .values(
        spent_ucr=_SPENT_NOW + _AMOUNT,
        reserved_ucr=keys.c.reserved_ucr - _HELD,
        period_start=_CURRENT_START,
    )
)
_CHARGE_START = case(
    (
        keys.c.limit_period == LimitPeriod.DAY.value,
        bindparam("charge_day_start", type_=UTCDateTime()),
    ),
    (
        keys.c.limit_period == LimitPeriod.WEEK.value,
        bindparam("charge_week_start", type_=UTCDateTime()),
    ),
    (
        keys.c.limit_period == LimitPeriod.MONTH.value,
        bindparam("charge_month_start", type_=UTCDateTime()),
    ),
    else_=bindparam("never_start", type_=UTCDateTime()),
)
"""The start of the key's period that contained the refunded charge."""
_REFUND_CHARGE = (
    update(keys)
    .where(
        keys.c.id == _KEY,
        keys.c.limit_ucr.is_not(None),
        keys.c.period_start == _CURRENT_START,
        _CHARGE_START == _CURRENT_START,
        # not a charge the counter never counted (made before a period change)
        or_(
            keys.c.counted_since.is_(None),
            keys.c.counted_since <= bindparam("charged_at", type_=UTCDateTime()),
        ),
    )
    .values(spent_ucr=case((keys.c.spent_ucr > _AMOUNT, keys.c.spent_ucr - _AMOUNT), else_=0))
)
_ADJUST = (
    update(keys)
    .where(keys.c.id == _KEY)
    .values(
        spent_ucr=keys.c.spent_ucr + bindparam("spent", type_=BigInteger()),
        reserved_ucr=keys.c.reserved_ucr + bindparam("reserved", type_=BigInteger()),
    )
)


def count_charge(conn: Connection, key_id: int, amount_ucr: int, now: datetime) -> None:
    """Count a charge of ``amount_ucr`` µcr (≥ 0) made with key ``key_id`` in the period of
    ``now``, in the caller's transaction; the key's row stays locked until it ends. Raises
    :class:`KeyLimitReached` (nothing written) when it would pass the key's limit."""
    params = {"key_id": key_id, "amount": amount_ucr, **_starts(now)}
    if conn.execute(_COUNT_CHARGE, params).rowcount != 1:
        raise _limit_reached(conn, key_id, amount_ucr, now)


def reserve_hold(conn: Connection, key_id: int, amount_ucr: int, now: datetime) -> None:
    """Reserve a hold of ``amount_ucr`` µcr placed with key ``key_id``: it counts against the
    limit until it is settled or released. Raises :class:`KeyLimitReached`."""
    params = {"key_id": key_id, "amount": amount_ucr, **_starts(now)}
    if conn.execute(_RESERVE_HOLD, params).rowcount != 1:
        raise _limit_reached(conn, key_id, amount_ucr, now)


def settle_hold(
    conn: Connection, key_id: int, held_ucr: int, charged_ucr: int, now: datetime
) -> None:
    """A hold of ``held_ucr`` reserved on the key is captured for ``charged_ucr`` (≤ held)
    at ``now``: the reservation goes and the charge counts in the current period. Never
    refused (the charge fitted in the reservation)."""
    assert 0 <= charged_ucr <= held_ucr, "a capture never exceeds its hold"
    params = {"key_id": key_id, "amount": charged_ucr, "held": held_ucr, **_starts(now)}
    conn.execute(_SETTLE_HOLD, params)


def release_hold(conn: Connection, key_id: int, held_ucr: int) -> None:
    """A hold of ``held_ucr`` reserved on the key is voided or expired: release it."""
    adjust(conn, key_id, spent_ucr=0, reserved_ucr=-held_ucr)


def refund_charge(
    conn: Connection, key_id: int, amount_ucr: int, charged_at: datetime, now: datetime
) -> bool:
    """Give ``amount_ucr`` µcr (> 0) of a charge counted on key ``key_id`` at ``charged_at``
    back to the key's allowance, refunded at ``now``, in the refund's transaction (one
    conditional UPDATE). Only when ``now`` falls in the same period of the key as
    ``charged_at`` and the stored counter is that period's; ``spent_ucr`` never goes below
    0, and only for a charge the current counter counted (not before its ``counted_since``:
    a period change starts a new counter). Returns True when the counter was reduced, False
    when the refund was in a later period, the charge predates the counter, or the key has
    no limit any more: nothing written."""
    charged = {
        f"charge_{name}": value
        for name, value in _starts(charged_at).items()
        if name != "never_start"
    }
    params = {
        "key_id": key_id,
        "amount": amount_ucr,
        "charged_at": charged_at,
        **_starts(now),
        **charged,
    }
    return bool(conn.execute(_REFUND_CHARGE, params).rowcount == 1)


_SET_LIMIT = (
    update(keys)
    .where(keys.c.id == _KEY)
    .values(
        limit_ucr=bindparam("limit", type_=BigInteger()),
        limit_period=bindparam("period"),
        spent_ucr=case((keys.c.limit_ucr.is_(None), 0), else_=_SPENT_NOW),
        period_start=bindparam("new_start", type_=UTCDateTime()),
        # A new counter (a limit where there was none, or another period) counts from now:
        # refunds of charges made before it are not given back to it.
        counted_since=case(
            (
                or_(keys.c.limit_ucr.is_(None), keys.c.limit_period != bindparam("period")),
                bindparam("now", type_=UTCDateTime()),
            ),
            else_=keys.c.counted_since,
        ),
    )
)


def set_limit(
    conn: Connection, key_id: int, limit_ucr: int, period: LimitPeriod, now: datetime
) -> None:
    """Give key ``key_id`` the limit ``limit_ucr`` µcr (≥ 0) per ``period`` from ``now`` on,
    in one UPDATE (a concurrent charge is never lost). What was spent in the key's current
    period stays spent, in the new period's counter too when the period changes (switching
    periods never grants a fresh allowance); a key without a limit starts at 0 spent.
    Reservations of pending holds stay. A limit below what is spent is allowed: nothing is
    left until the period resets."""
    params = {
        "key_id": key_id,
        "limit": limit_ucr,
        "period": period.value,
        "new_start": period_start(period, now),
        "now": now,
        **_starts(now),
    }
    conn.execute(_SET_LIMIT, params)


def remove_limit(conn: Connection, key_id: int) -> None:
    """Take key ``key_id``'s limit away. Its counters stay as they are so that pending holds
    reserved on it still release what they reserved."""
    conn.execute(update(keys).where(keys.c.id == key_id).values(limit_ucr=None, limit_period=None))


def adjust(conn: Connection, key_id: int, *, spent_ucr: int, reserved_ucr: int) -> None:
    """Add to the key's counters as they are (no rollover): undoing, in the same
    transaction, what :func:`count_charge` or :func:`settle_hold` did."""
    params = {"key_id": key_id, "spent": spent_ucr, "reserved": reserved_ucr}
    conn.execute(_ADJUST, params)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """A limited key's state at a moment: the limit and its period, µcr spent in the current
    period, reserved by pending holds, left (never below 0) and when the period resets
    (None: never)."""

    limit_ucr: int
    period: LimitPeriod
    spent_ucr: int
    reserved_ucr: int
    resets_at: datetime | None

    @property
    def left_ucr(self) -> int:
        return max(0, self.limit_ucr - self.spent_ucr - self.reserved_ucr)


def usage_of(row: Any, now: datetime) -> KeyUsage | None:
    """The limit state of an ``api_keys`` row at ``now`` (None: the key has no limit)."""
    if row.limit_ucr is None:
        return None
    period = LimitPeriod(row.limit_period or LimitPeriod.NEVER.value)
    current = period_start(period, now)
    stored = row.period_start
    if stored is not None and stored.tzinfo is None:
        stored = stored.replace(tzinfo=UTC)
    spent = int(row.spent_ucr) if stored is not None and stored >= current else 0
    return KeyUsage(
        limit_ucr=int(row.limit_ucr),
        period=period,
        spent_ucr=spent,
        reserved_ucr=int(row.reserved_ucr),
        resets_at=next_reset(period, now),
    )


_STATE = select(
    keys.c.limit_ucr,
    keys.c.limit_period,
    keys.c.period_start,
    keys.c.spent_ucr,
    keys.c.reserved_ucr,
).where(keys.c.id == _KEY)


def state(conn: Connection, key_id: int, now: datetime) -> KeyUsage:
    """The limit state of limited key ``key_id`` at ``now`` (a plain read: a bound for an
    estimate, never the check; the conditional UPDATEs above are)."""
    row = conn.execute(_STATE, {"key_id": key_id}).first()
    found = None if row is None else usage_of(row, now)
    assert found is not None, f"key {key_id} has no spend limit"
    return found


def _limit_reached(
    conn: Connection, key_id: int, needed_ucr: int, now: datetime
) -> KeyLimitReached:
    return limit_reached(state(conn, key_id, now), key_id, needed_ucr)


def limit_reached(state: KeyUsage, key_id: int, needed_ucr: int) -> KeyLimitReached:
    """The :class:`KeyLimitReached` error of key ``key_id`` in ``state`` for a charge or hold
    of ``needed_ucr`` µcr."""
    resets = state.resets_at
    when = "never resets" if resets is None else f"resets at {resets.isoformat()}"
    return KeyLimitReached(
        f"API key {key_id} has {state.left_ucr} µcr left of its {state.limit_ucr} µcr"
        f" {state.period.value} limit, {needed_ucr} µcr needed; the limit {when}",
        key_id=key_id,
        limit_ucr=state.limit_ucr,
        left_ucr=state.left_ucr,
        needed_ucr=needed_ucr,
        resets_at=None if resets is None else resets.isoformat(),
    )
