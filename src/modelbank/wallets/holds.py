"""Holds on wallets (DESIGN §3 two-phase transfers, exposed over HTTP).

A hold reserves credits for a call whose cost is not known yet: a pending transfer wallet →
``platform_revenue`` that lowers the available balance at once. It ends in one of three ways:

- **capture** (``amount`` ≤ held): a usage event is charged through the normal pipeline for
  exactly ``amount`` (grants burned, creator earnings paid, usage row written); the hold is
  *posted* for that amount and the rest released, all in one transaction
  (:func:`modelbank.metering.capture.capture`: charging is metering's, a layer up);
- **void**: everything is released;
- **expiry**: the jobs void holds whose timeout passed (reason ``expired``).

The hold's status is the ledger's (pending / posted / voided); ``wallet_holds`` adds the user,
the model and the usage event that captured it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from modelbank.auth import limits as key_limits
from modelbank.catalog import service as catalog
from modelbank.catalog.errors import ModelNotFound
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.errors import TransferNotFound
from modelbank.users.errors import UserNotFound
from modelbank.wallets import alerts, grants
from modelbank.wallets.errors import HoldNotFound
from modelbank.wallets.models import holds_table as holds
from modelbank.webhooks import service as webhooks

MAX_TIMEOUT_S = ledger.MAX_HOLD_TIMEOUT_S
"""Longest hold: 7 days."""


@dataclass(frozen=True, slots=True)
class HoldInfo:
    """A wallet hold: ``amount_ucr`` reserved until ``expires_at``; ``status`` pending, posted
    (``captured_ucr`` charged by usage ``usage_id``) or voided (``reason``: voided, expired)."""

    id: int
    user_id: int
    model_id: int | None
    amount_ucr: int
    status: str
    captured_ucr: int
    usage_id: int | None
    reason: str | None
    created_at: datetime | None
    expires_at: datetime | None
    resolved_at: datetime | None
    api_key_id: int | None = None
    """The limited API key the hold is reserved on (None: none); its capture counts there."""


def _info(row: Any, hold: ledger.Hold) -> HoldInfo:
    return HoldInfo(
        id=hold.id,
        user_id=int(row.user_id),
        model_id=None if row.model_id is None else int(row.model_id),
        amount_ucr=hold.amount,
        status=hold.status,
        captured_ucr=hold.posted_amount,
        usage_id=None if row.usage_id is None else int(row.usage_id),
        reason=hold.reason,
        created_at=hold.created_at,
        expires_at=hold.expires_at,
        resolved_at=hold.resolved_at,
        api_key_id=None if row.api_key_id is None else int(row.api_key_id),
    )


_HOLD_ROW = select(holds).where(holds.c.transfer_id == bindparam("hold_id"))


def get_hold(session: Session, hold_id: int) -> HoldInfo:
    """The wallet hold ``hold_id``. Raises :class:`HoldNotFound`."""
    row = session.connection().execute(_HOLD_ROW, {"hold_id": hold_id}).first()
    if row is None:
        raise HoldNotFound(f"no hold {hold_id}", hold_id=hold_id)
    try:
        return _info(row, ledger.get_hold(session, hold_id))
    except TransferNotFound as exc:  # pragma: no cover - a wallet hold always has its transfer
        raise HoldNotFound(f"no hold {hold_id}", hold_id=hold_id) from exc


@dataclass(frozen=True, slots=True)
class HoldPage:
    """Up to ``limit`` holds and the id to continue after (None: nothing more to read)."""

    items: list[HoldInfo]
    next_after: int | None


def list_holds(
    session: Session,
    user_id: int,
    *,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> HoldPage:
    """The user's holds by id with ids above ``after_id``, at most ``limit``, optionally only
    those with ``status`` (pending, posted, voided: the ledger's, so it is matched while
    reading on until the page is full or the holds run out)."""
    items: list[HoldInfo] = []
    cursor = after_id
    conn = session.connection()
    while len(items) < limit:
        rows = conn.execute(
            select(holds)
            .where(holds.c.user_id == user_id, holds.c.transfer_id > cursor)
            .order_by(holds.c.transfer_id)
            .limit(limit)
        ).all()
        for row in rows:
            cursor = int(row.transfer_id)
            info = _info(row, ledger.get_hold(session, cursor))
            if status is None or info.status == status:
                items.append(info)
                if len(items) == limit:
                    break
        if len(rows) < limit:
            return HoldPage(items, None)
    return HoldPage(items, cursor)


def expire_due(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """Void up to ``limit`` holds whose timeout passed (any hold of the ledger); for wallet
    holds emit ``hold.expired`` and re-check the owners' low-balance alerts. Returns how many
    were voided; idempotent and bounded (run until 0)."""
    now = now or utcnow()
    expired = ledger.expire_holds_detailed(session, now=now, limit=limit)
    if not expired:
        return 0
    rows = {
        int(row.transfer_id): row
        for row in session.connection().execute(
            select(holds).where(holds.c.transfer_id.in_([h.id for h in expired]))
        )
    }
    owners: set[int] = set()
    for hold in expired:
        row = rows.get(hold.id)
        if row is None:
            continue
        owners.add(int(row.user_id))
        if row.api_key_id is not None:
            key_limits.release_hold(session.connection(), int(row.api_key_id), hold.amount)
        webhooks.emit(
            session,
            "hold.expired",
            {
                "hold_id": hold.id,
                "user_id": int(row.user_id),
                "amount_ucr": hold.amount,
                "model_id": None if row.model_id is None else int(row.model_id),
            },
            now=now,
        )
    alerts.check(session, owners, now=now)
    return len(expired)


def place(
    session: Session,
    user_id: int,
    amount_ucr: int,
    *,
    timeout_s: int,
    idempotency_key: str,
    model: int | str | None = None,
    now: datetime | None = None,
    limited_key_id: int | None = None,
) -> HoldInfo:
    """Reserve ``amount_ucr`` µcr of the user's wallet for ``timeout_s`` seconds (1 s – 7 days)
    for a call to ``model`` (id or slug; optional, then required at capture).
    ``limited_key_id``: the caller's API key with a spend limit, on which the hold is
    reserved too until it is captured, voided or expires (:mod:`modelbank.auth.limits`).

    Expired grants are swept first, so only live credits can be reserved. Idempotent on
    ``idempotency_key``. Raises :class:`InvalidInput` (amount ≤ 0, timeout out of range),
    :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.catalog.errors.ModelNotFound`,
    :class:`~modelbank.ledger.errors.InsufficientFunds`,
    :class:`~modelbank.auth.errors.KeyLimitReached` (raised after writing: the caller's
    transaction must roll back, as it does on any error),
    :class:`~modelbank.errors.IdempotencyConflict`."""
    now = now or utcnow()
    _check_request(amount_ucr, timeout_s)
    wallet = ledger.lock_user_accounts(session, [user_id], AccountCode.USER_WALLET).get(user_id)
    if wallet is None:
        raise UserNotFound(f"no user {user_id}", user_id=user_id)
    model_id = _model_id(session, model)
    grants.GrantBook.load(session, {user_id: wallet}, now=now).flush(session, now=now)
    hold_id = _create_hold(session, wallet, user_id, amount_ucr, timeout_s, idempotency_key, now)
    conn = session.connection()
    if not _record_hold(conn, hold_id, user_id, model_id, limited_key_id, now):
        return get_hold(session, hold_id)  # a replay: placed before
    if limited_key_id is not None:
        key_limits.reserve_hold(conn, limited_key_id, amount_ucr, now)
    alerts.check(session, [user_id], now=now)
    return HoldInfo(
        id=hold_id,
        user_id=user_id,
        model_id=model_id,
        amount_ucr=amount_ucr,
        status="pending",
        captured_ucr=0,
        usage_id=None,
        reason=None,
        created_at=now,
        expires_at=now + timedelta(seconds=timeout_s),
        resolved_at=None,
        api_key_id=limited_key_id,
    )


def _check_request(amount_ucr: int, timeout_s: int) -> None:
    """Raise :class:`InvalidInput` unless ``amount_ucr`` > 0 µcr and ``timeout_s`` is 1 s – 7
    days."""
    if amount_ucr <= 0:
        raise InvalidInput("amount_ucr must be positive")
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(f"timeout_s must be 1…{MAX_TIMEOUT_S}, got {timeout_s}")


def _model_id(session: Session, model: int | str | None) -> int | None:
    """The id of the active ``model`` (id or slug; None: none). Raises
    :class:`~modelbank.catalog.errors.ModelNotFound`."""
    if model is None:
        return None
    info = catalog.resolve_models(session, {model}).get(model)
    if info is None:
        raise ModelNotFound(f"no active model {model!r}", model=model)
    return info.id


def _create_hold(
    session: Session,
    wallet: ledger.AccountBalance,
    user_id: int,
    amount_ucr: int,
    timeout_s: int,
    idempotency_key: str,
    now: datetime,
) -> int:
    """The ledger's pending transfer wallet → ``platform_revenue`` of ``amount_ucr`` µcr for
    ``timeout_s`` seconds (the wallet is locked already); returns its id."""
    return ledger.create_hold(
        session,
        ledger.NewTransfer(
            debit_account_id=wallet.id,
            credit_account_id=ledger.platform_account(session, AccountCode.PLATFORM_REVENUE),
            amount=amount_ucr,
            code=TransferCode.USAGE_CHARGE,
            ref_type="user",
            ref_id=user_id,
            idempotency_key=idempotency_key,
        ),
        timeout_s=timeout_s,
        now=now,
        locked={wallet.id: wallet},
    )


def _record_hold(
    conn: Connection,
    hold_id: int,
    user_id: int,
    model_id: int | None,
    limited_key_id: int | None,
    now: datetime,
) -> bool:
    """Insert the ``wallet_holds`` row of hold ``hold_id``; False when it exists (a replay)."""
    insert_row = _INSERT_HOLD_PG if conn.dialect.name == "postgresql" else _INSERT_HOLD_SQLITE
    row = {
        "transfer_id": hold_id,
        "user_id": user_id,
        "model_id": model_id,
        "created_at": now,
        "api_key_id": limited_key_id,
    }
    # RETURNING, not rowcount: PostgreSQL's driver may report -1 for an insert that did
    # nothing, and a replay must not reserve on the key twice.
    return conn.execute(insert_row, row).first() is not None


_INSERT_HOLD_PG = pg_insert(holds).on_conflict_do_nothing().returning(holds.c.transfer_id)
_INSERT_HOLD_SQLITE = sqlite_insert(holds).on_conflict_do_nothing().returning(holds.c.transfer_id)


def void(session: Session, hold_id: int, *, now: datetime | None = None) -> HoldInfo:
    """Release the whole hold. Raises :class:`HoldNotFound`,
    :class:`~modelbank.ledger.errors.HoldNotPending`."""
    now = now or utcnow()
    hold = get_hold(session, hold_id)
    ledger.void_hold(session, hold_id, now=now, reason="voided")
    if hold.api_key_id is not None:
        key_limits.release_hold(session.connection(), hold.api_key_id, hold.amount_ucr)
    alerts.check(session, [hold.user_id], now=now)
    return get_hold(session, hold_id)


def limited_key_of_usage(session: Session, usage_id: int) -> int | None:
    """The limited API key (``api_keys.id``) a usage charge counted on, when the charge
    captured a hold placed with one (gateway calls, ``POST …/holds/{id}/capture``); None
    otherwise. Usage charged directly (``POST /usage``) records no key."""
    found = (
        session.connection()
        .execute(
            select(holds.c.api_key_id).where(
                holds.c.usage_id == usage_id, holds.c.api_key_id.is_not(None)
            )
        )
        .first()
    )
    return None if found is None else int(found.api_key_id)
