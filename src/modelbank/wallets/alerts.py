"""Low-balance alerts (DESIGN §5).

Each wallet has a threshold (µcr): its own, or the platform default (``platform_settings``
key ``low_balance_default_ucr``, :data:`DEFAULT_THRESHOLD_UCR` when unset). When the
available balance (posted minus pending holds) falls to or below it, one
``wallet.low_balance`` event is emitted (webhook outbox + the dashboard's warning) and the
wallet is marked alerted; nothing more is emitted until the balance has recovered above the
threshold, which clears the mark.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.db.fast import FastSQL, Read
from modelbank.db.fast import connection as fast_connection
from modelbank.errors import InvalidInput
from modelbank.ledger.codes import AccountCode
from modelbank.money import format_credits
from modelbank.notices import service as notices
from modelbank.platform import service as platform
from modelbank.users import service as users
from modelbank.wallets import autotopup
from modelbank.wallets.models import alerts_table as alerts
from modelbank.webhooks import service as webhooks

DEFAULT_THRESHOLD_UCR = 5_000_000
"""5 credits: the threshold when neither the user nor the operator set one."""
DEFAULT_KEY = "low_balance_default_ucr"
"""``platform_settings`` key of the operator's default threshold (µcr)."""
LOW_BALANCE_EVENT = "wallet.low_balance"

_STATE_FAST = FastSQL(
    "SELECT a.owner_id, a.credits_posted - a.debits_posted - a.debits_pending, w.user_id,"
    " w.threshold_ucr, w.alerted, (SELECT value FROM platform_settings WHERE key = ?),"
    " t.enabled, t.threshold_ucr, t.triggered_at"
    " FROM accounts a LEFT OUTER JOIN wallet_alerts w ON w.user_id = a.owner_id"
    " LEFT OUTER JOIN auto_topups t ON t.user_id = a.owner_id"
    " WHERE a.code = ? AND a.owner_id IN ({in})"
)
"""Each wallet's available balance beside its alert row, the default threshold and its auto
top-up's state, on the driver's cursor: every charge runs it (DESIGN §16)."""


class _State(NamedTuple):
    owner_id: int
    available: int
    has_row: int | None
    threshold_ucr: int | None
    alerted: bool | None
    default: int | None
    topup_enabled: bool | None
    topup_threshold_ucr: int | None
    topup_triggered_at: object | None


_SET = (
    update(alerts)
    .where(alerts.c.user_id == bindparam("uid"))
    .values(alerted=bindparam("alerted"), alerted_at=bindparam("at"))
)


@dataclass(frozen=True, slots=True)
class AlertState:
    """A wallet's low-balance state: threshold in force (µcr), whether it is its own, the
    available balance (µcr) and whether the alert is on."""

    user_id: int
    threshold_ucr: int
    custom: bool
    available_ucr: int
    alerted: bool
    alerted_at: datetime | None


def state_read(user_ids: Iterable[int]) -> Read:
    """The read :func:`check` starts with (for :func:`~modelbank.db.fast.read_ahead`)."""
    ids = sorted(set(user_ids))
    return _STATE_FAST.read((DEFAULT_KEY, AccountCode.USER_WALLET.value, *ids), size=len(ids))


def check(session: Session, user_ids: Iterable[int], *, now: datetime | None = None) -> int:
    """Compare the users' available balances with their thresholds, in the caller's
    transaction (after the balance change): emit ``wallet.low_balance`` for each wallet that
    crossed downward (and queue its low-balance email, :mod:`modelbank.notices`), clear the
    mark of each that recovered, and hand each balance to its auto top-up
    (:func:`modelbank.wallets.autotopup.on_balance`: a crossing queues a top-up). One query
    when nothing changes. Returns how many alerts were emitted."""
    read = state_read(user_ids)
    if not read.size:
        return 0
    now = now or utcnow()
    conn = fast_connection(session)
    emitted = 0
    found = read.sql.execute(conn, read.params, size=read.size).fetchall()
    for row in map(_State._make, found):
        autotopup.on_balance(
            session,
            int(row.owner_id),
            int(row.available),
            row.topup_enabled,
            row.topup_threshold_ucr,
            row.topup_triggered_at,
            now=now,
        )
        default = DEFAULT_THRESHOLD_UCR if row.default is None else int(row.default)
        threshold = default if row.threshold_ucr is None else int(row.threshold_ucr)
        available = int(row.available)
        alerted = bool(row.alerted)
        user_id = int(row.owner_id)
        if available <= threshold and not alerted:
            if row.has_row is None:
                conn.execute(
                    alerts.insert().values(
                        user_id=user_id, threshold_ucr=None, alerted=True, alerted_at=now
                    )
                )
            else:
                conn.execute(_SET, {"uid": user_id, "alerted": True, "at": now})
            webhooks.emit(
                session,
                LOW_BALANCE_EVENT,
                {
                    "user_id": user_id,
                    "available_ucr": available,
                    "available": format_credits(available),
                    "threshold_ucr": threshold,
                    "threshold": format_credits(threshold),
                },
                now=now,
            )
            notices.notify(
                session,
                user_id,
                "low_balance",
                {"available_ucr": available, "threshold_ucr": threshold},
                now=now,
            )
            emitted += 1
        elif available > threshold and alerted:
            conn.execute(_SET, {"uid": user_id, "alerted": False, "at": None})
    return emitted


def state(session: Session, user_id: int) -> AlertState:
    """The user's alert state. Raises :class:`~modelbank.users.errors.UserNotFound`."""
    users.get_user(session, user_id)
    read = state_read([user_id])
    row = _State._make(
        read.sql.execute(fast_connection(session), read.params, size=read.size).fetchone()
    )
    default = DEFAULT_THRESHOLD_UCR if row.default is None else int(row.default)
    at = None
    if row.has_row is not None:
        at = (
            fast_connection(session)
            .execute(select(alerts.c.alerted_at).where(alerts.c.user_id == user_id))
            .scalar_one()
        )
    return AlertState(
        user_id=user_id,
        threshold_ucr=default if row.threshold_ucr is None else int(row.threshold_ucr),
        custom=row.threshold_ucr is not None,
        available_ucr=int(row.available),
        alerted=bool(row.alerted),
        alerted_at=at,
    )


def set_threshold(
    session: Session, user_id: int, threshold_ucr: int | None, *, now: datetime | None = None
) -> AlertState:
    """Set the user's threshold (µcr ≥ 0; None: back to the default), then re-check (a
    threshold above the balance alerts at once). Raises :class:`InvalidInput`,
    :class:`~modelbank.users.errors.UserNotFound`."""
    if threshold_ucr is not None and threshold_ucr < 0:
        raise InvalidInput("threshold_ucr must be ≥ 0")
    users.get_user(session, user_id)
    conn = fast_connection(session)
    changed = conn.execute(
        update(alerts).where(alerts.c.user_id == user_id).values(threshold_ucr=threshold_ucr)
    ).rowcount
    if not changed:
        conn.execute(
            alerts.insert().values(user_id=user_id, threshold_ucr=threshold_ucr, alerted=False)
        )
    check(session, [user_id], now=now)
    return state(session, user_id)


def default_threshold(session: Session) -> int:
    """The platform default threshold (µcr)."""
    return platform.get(session, DEFAULT_KEY, DEFAULT_THRESHOLD_UCR)


def set_default_threshold(
    session: Session, threshold_ucr: int, *, now: datetime | None = None
) -> int:
    """Set the platform default threshold (µcr ≥ 0). Raises :class:`InvalidInput`."""
    if threshold_ucr < 0:
        raise InvalidInput("threshold_ucr must be ≥ 0")
    return platform.put(session, DEFAULT_KEY, threshold_ucr, now=now)
