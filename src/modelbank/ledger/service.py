"""Ledger service: accounts, linked transfers, holds and reversals (DESIGN §3).

Every function takes the caller's ``Session`` first and never commits (STYLE §4): the caller's
transaction makes a group of transfers *linked*: all are written or none. Balance checks and
updates happen under row locks: ``SELECT … FOR UPDATE`` on PostgreSQL (taken in account-id
order so two transactions never deadlock), the single writer lock on SQLite (``BEGIN
IMMEDIATE``, see :mod:`modelbank.db.engine`).

The hot path uses SQLAlchemy Core on the session's connection (DESIGN §16: the ORM costs
20–37× the driver); account totals are updated once per account per call, however many
transfers touch it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.db.bulk import BulkInsert, db_timestamp
from modelbank.db.fast import FastSQL, Read
from modelbank.db.fast import connection as fast_connection
from modelbank.errors import IdempotencyConflict
from modelbank.ledger import holds
from modelbank.ledger.codes import (
    PLATFORM_ACCOUNT_CODES,
    USER_ACCOUNT_CODES,
    AccountCode,
    AccountFlags,
    TransferCode,
    TransferFlags,
)
from modelbank.ledger.errors import (
    AccountNotFound,
    AccountTotalLimit,
    InsufficientFunds,
    InvalidTransfer,
    TransferNotFound,
)
from modelbank.ledger.holds import Hold as Hold  # re-exported: the ledger's hold type
from modelbank.ledger.models import MAX_ACCOUNT_TOTAL
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers

MAX_HOLD_TIMEOUT_S = 7 * 24 * 3600
"""A hold may reserve credits for at most a week: longer reservations are a purchase."""

_FLAGGED = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)

# Hot-path statements, built once: SQLAlchemy then skips rebuilding and re-keying them on
# every call (bench/charge.py measured ~100 µs per execute built per call, ~23 µs prebuilt).
_LOCK_ACCOUNTS = (
    select(accounts)
    .where(accounts.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(accounts.c.id)
)
_LOCK_ACCOUNTS_PG = _LOCK_ACCOUNTS.with_for_update()
_ACCOUNT_IDS = select(accounts.c.id).where(accounts.c.id.in_(bindparam("ids", expanding=True)))
_USER_ACCOUNTS = select(accounts.c.owner_id, accounts.c.id).where(
    accounts.c.code == bindparam("code"),
    accounts.c.owner_id.in_(bindparam("ids", expanding=True)),
)
_PLATFORM_ACCOUNT = select(accounts.c.id).where(
    accounts.c.code == bindparam("code"), accounts.c.owner_id.is_(None)
)
_LOCK_USER_ACCOUNTS_FAST = FastSQL(
    "SELECT id, code, owner_id, flags, debits_posted, credits_posted, debits_pending,"
    " credits_pending FROM accounts WHERE code = ? AND owner_id IN ({in}) ORDER BY id"
)
_LOCK_USER_ACCOUNTS_PG_FAST = FastSQL(_LOCK_USER_ACCOUNTS_FAST.text + " FOR UPDATE")
_UPDATE_TOTALS_FAST = FastSQL(
    "UPDATE accounts SET debits_posted = debits_posted + ?, credits_posted = credits_posted + ?,"
    " debits_pending = debits_pending + ?, credits_pending = credits_pending + ? WHERE id = ?"
)

_TOTALS_BOUNDED = "ck_accounts_totals_bounded"
"""The CHECK constraint that keeps account totals under :data:`MAX_ACCOUNT_TOTAL`."""

_INSERT_LINKED = BulkInsert(
    transfers,
    (
        "debit_account_id",
        "credit_account_id",
        "amount",
        "code",
        "flags",
        "ref_type",
        "ref_id",
        "created_at",
    ),
)

# Platform accounts are created once (by migration) and never deleted or renumbered, so
# their ids are cached per engine (a weak key: a disposed engine's entry goes with it).
_platform_ids: weakref.WeakKeyDictionary[Engine, dict[str, int]] = weakref.WeakKeyDictionary()
_platform_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class NewTransfer:
    """A transfer to post: ``amount`` µcr (> 0) from ``debit_account_id`` to
    ``credit_account_id``. ``idempotency_key`` is optional for transfers posted inside a
    business operation that is itself idempotent (a usage charge); see :func:`transfer`."""

    debit_account_id: int
    credit_account_id: int
    amount: int
    code: TransferCode
    ref_type: str | None = None
    ref_id: int | None = None
    idempotency_key: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(slots=True)
class AccountBalance:
    """Totals of one account in µcr, as read under lock."""

    id: int
    code: str
    owner_id: int | None
    flags: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def balance(self) -> int:
        """Posted balance: credits_posted − debits_posted (µcr)."""
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """Spendable: posted balance minus pending debits (holds) (µcr)."""
        return self.credits_posted - self.debits_posted - self.debits_pending

    @property
    def flagged(self) -> bool:
        """True when the account must never go below zero."""
        return bool(self.flags & _FLAGGED)


@dataclass(slots=True)
class _Delta:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0


@dataclass
class _Plan:
    rows: list[dict[str, Any]] = field(default_factory=list)
    deltas: dict[int, _Delta] = field(default_factory=dict)

    def delta(self, account_id: int) -> _Delta:
        found = self.deltas.get(account_id)
        if found is None:
            found = self.deltas[account_id] = _Delta()
        return found


# ---------------------------------------------------------------- accounts


def ensure_platform_accounts(session: Session) -> dict[AccountCode, int]:
    """Create the platform's singleton accounts when missing; return code → account id."""
    conn = fast_connection(session)
    existing = {
        row.code: row.id
        for row in conn.execute(
            select(accounts.c.id, accounts.c.code).where(accounts.c.owner_id.is_(None))
        )
    }
    for code in PLATFORM_ACCOUNT_CODES:
        if code.value not in existing:
            result = conn.execute(
                insert(accounts).values(
                    code=code.value, owner_id=None, flags=0, created_at=utcnow()
                )
            )
            existing[code.value] = int(result.inserted_primary_key[0])  # type: ignore[index]
    return {AccountCode(code): account_id for code, account_id in existing.items()}


def platform_account(session: Session, code: AccountCode) -> int:
    """The id of a platform account (``owner_id`` NULL). Raises :class:`AccountNotFound`.

    Found ids are cached per engine: platform accounts are never deleted or renumbered."""
    conn = fast_connection(session)
    engine = conn.engine
    cached = _platform_ids.get(engine)
    if cached is not None and code.value in cached:
        return cached[code.value]
    account_id = conn.execute(_PLATFORM_ACCOUNT, {"code": code.value}).scalar()
    if account_id is None:
        raise AccountNotFound(f"platform account {code.value} is missing; run `modelbank migrate`")
    with _platform_lock:
        _platform_ids.setdefault(engine, {})[code.value] = int(account_id)
    return int(account_id)


def open_user_accounts(session: Session, user_id: int) -> dict[AccountCode, int]:
    """Open (or find) a user's wallet and earnings accounts, both flagged non-negative."""
    conn = fast_connection(session)
    found = {
        AccountCode(row.code): int(row.id)
        for row in conn.execute(
            select(accounts.c.id, accounts.c.code).where(accounts.c.owner_id == user_id)
        )
    }
    for code in USER_ACCOUNT_CODES:
        if code not in found:
            result = conn.execute(
                insert(accounts).values(
                    code=code.value, owner_id=user_id, flags=_FLAGGED, created_at=utcnow()
                )
            )
            found[code] = int(result.inserted_primary_key[0])  # type: ignore[index]
    return found


def user_account_ids(
    session: Session, user_ids: Iterable[int], code: AccountCode
) -> dict[int, int]:
    """Map user id → account id for accounts of ``code`` (users without one are absent)."""
    ids = list(set(user_ids))
    if not ids:
        return {}
    rows = fast_connection(session).execute(_USER_ACCOUNTS, {"code": code.value, "ids": ids})
    return {int(row.owner_id): int(row.id) for row in rows}


def lock_accounts(session: Session, account_ids: Iterable[int]) -> dict[int, AccountBalance]:
    """Read accounts' totals under a row lock, in id order (no deadlocks between callers).

    Returns id → :class:`AccountBalance`. Raises :class:`AccountNotFound` for a missing id.
    On SQLite the transaction already holds the writer lock (BEGIN IMMEDIATE).
    """
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    postgres = session.get_bind().dialect.name == "postgresql"
    query = _LOCK_ACCOUNTS_PG if postgres else _LOCK_ACCOUNTS
    found = {
        int(row.id): AccountBalance(
            id=int(row.id),
            code=row.code,
            owner_id=row.owner_id,
            flags=int(row.flags),
            debits_posted=int(row.debits_posted),
            credits_posted=int(row.credits_posted),
            debits_pending=int(row.debits_pending),
            credits_pending=int(row.credits_pending),
        )
        for row in fast_connection(session).execute(query, {"ids": ids})
    }
    missing = [account_id for account_id in ids if account_id not in found]
    if missing:
        raise AccountNotFound(f"no account {missing[0]}", account_id=missing[0])
    return found


def lock_user_accounts_read(dialect: str, user_ids: Iterable[int], code: AccountCode) -> Read:
    """The read :func:`lock_user_accounts` runs (for :func:`~modelbank.db.fast.read_ahead`)."""
    ids = sorted(set(user_ids))
    query = _LOCK_USER_ACCOUNTS_PG_FAST if dialect == "postgresql" else _LOCK_USER_ACCOUNTS_FAST
    return query.read((code.value, *ids), size=len(ids))


def lock_user_accounts(
    session: Session, user_ids: Iterable[int], code: AccountCode
) -> dict[int, AccountBalance]:
    """Find and lock users' accounts of ``code`` in one query: user id → :class:`AccountBalance`.

    Like :func:`user_account_ids` followed by :func:`lock_accounts` (same lock order: account
    id), one round trip instead of two. Users without such an account are absent.
    """
    conn = fast_connection(session)
    read = lock_user_accounts_read(conn.dialect.name, user_ids, code)
    if not read.size:
        return {}
    rows = read.sql.execute(conn, read.params, size=read.size).fetchall()
    return {
        int(owner): AccountBalance(
            int(i), c, int(owner), int(f), int(dp), int(cp), int(dq), int(cq)
        )
        for i, c, owner, f, dp, cp, dq, cq in rows
    }


def _balance(row: Any) -> AccountBalance:
    return AccountBalance(
        id=int(row.id),
        code=row.code,
        owner_id=row.owner_id,
        flags=int(row.flags),
        debits_posted=int(row.debits_posted),
        credits_posted=int(row.credits_posted),
        debits_pending=int(row.debits_pending),
        credits_pending=int(row.credits_pending),
    )


def get_balance(session: Session, account_id: int) -> AccountBalance:
    """An account's totals (no lock). Raises :class:`AccountNotFound`."""
    row = (
        fast_connection(session)
        .execute(select(accounts).where(accounts.c.id == account_id))
        .first()
    )
    if row is None:
        raise AccountNotFound(f"no account {account_id}", account_id=account_id)
    return _balance(row)


# ---------------------------------------------------------------- posting


def post_transfers(
    session: Session,
    new_transfers: Sequence[NewTransfer],
    *,
    now: datetime | None = None,
    locked: Mapping[int, AccountBalance] | None = None,
    existing: Iterable[int] = (),
) -> None:
    """Post ``new_transfers`` as one linked group: all or none (the caller's transaction).

    Checks every transfer (amount > 0, distinct accounts), locks the accounts involved
    (reusing ``locked`` balances the caller already read under lock), verifies that no
    flagged account ends below zero, inserts the rows and applies one totals update per
    account. ``existing``: ids of accounts the caller has just read in this transaction,
    whose existence is then not checked again. Raises :class:`InvalidTransfer`,
    :class:`AccountNotFound`, :class:`InsufficientFunds` (context: account_id,
    available_ucr, needed_ucr) before writing anything.
    """
    if not new_transfers:
        return
    now = now or utcnow()
    plan = _Plan()
    for spec in new_transfers:
        _validate(spec)
        plan.rows.append(_row(spec, now, flags=TransferFlags.NONE))
        plan.delta(spec.debit_account_id).debits_posted += spec.amount
        plan.delta(spec.credit_account_id).credits_posted += spec.amount
    _apply(session, plan, locked, existing=existing)


LinkedRow = tuple[int, int, int, str, int | None]
"""One transfer for :func:`post_linked`: (debit account id, credit account id, amount µcr,
transfer code value, ref id)."""


def post_linked(
    session: Session,
    rows: Sequence[LinkedRow],
    *,
    ref_type: str | None,
    now: datetime | None = None,
    locked: Mapping[int, AccountBalance] | None = None,
    existing: Iterable[int] = (),
) -> None:
    """:func:`post_transfers` for hot paths: the same checks, locks, errors and writes, for
    plain tuples (see :data:`LinkedRow`) that share one ``ref_type``, without metadata or
    idempotency keys, inserted with one driver ``executemany``.

    Raises :class:`InvalidTransfer`, :class:`AccountNotFound`, :class:`InsufficientFunds`
    before writing anything.
    """
    if not rows:
        return
    now = now or utcnow()
    plan = _Plan()
    deltas = plan.deltas
    for debit, credit, amount, _code, _ref in rows:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidTransfer(f"transfer amount must be a positive integer µcr, got {amount!r}")
        if debit == credit:
            raise InvalidTransfer("debit and credit accounts must differ")
        found = deltas.get(debit)
        if found is None:
            found = deltas[debit] = _Delta()
        found.debits_posted += amount
        found = deltas.get(credit)
        if found is None:
            found = deltas[credit] = _Delta()
        found.credits_posted += amount
    created = db_timestamp(session.get_bind().dialect.name, now)
    flags = int(TransferFlags.NONE)
    bulk = [
        (debit, credit, amount, code, flags, ref_type, ref, created)
        for debit, credit, amount, code, ref in rows
    ]
    _apply(session, plan, locked, existing=existing, bulk_rows=bulk)


def transfer(session: Session, spec: NewTransfer, *, now: datetime | None = None) -> int:
    """Post one standalone transfer idempotently; return its id.

    ``spec.idempotency_key`` is required. The same key with the same content returns the
    first transfer's id and changes nothing; with different content it raises
    :class:`~modelbank.errors.IdempotencyConflict`. Other errors as :func:`post_transfers`.
    """
    if not spec.idempotency_key:
        raise InvalidTransfer("a standalone transfer needs an idempotency key")
    existing = _find_by_key(session, spec.idempotency_key)
    if existing is not None:
        _same_or_conflict(existing, spec)
        return int(existing.id)
    _validate(spec)
    plan = _Plan()
    plan.rows.append(_row(spec, now or utcnow(), flags=TransferFlags.NONE))
    plan.delta(spec.debit_account_id).debits_posted += spec.amount
    plan.delta(spec.credit_account_id).credits_posted += spec.amount
    new_id = _apply(session, plan, None, returning=True)
    assert new_id is not None
    return new_id


def create_hold(
    session: Session,
    spec: NewTransfer,
    *,
    timeout_s: int | None,
    now: datetime | None = None,
    locked: Mapping[int, AccountBalance] | None = None,
) -> int:
    """Reserve ``spec.amount`` µcr as a pending transfer that expires after ``timeout_s``
    (None: never; it waits to be posted or voided, as a payout awaiting approval).

    The reservation counts in debits_pending/credits_pending; the debit account's available
    balance drops at once. Idempotent on ``spec.idempotency_key`` like :func:`transfer`.
    Raises :class:`InvalidTransfer` (bad amount or timeout not in 1…MAX_HOLD_TIMEOUT_S),
    :class:`InsufficientFunds`. Returns the hold's transfer id.
    """
    if timeout_s is not None and not 0 < timeout_s <= MAX_HOLD_TIMEOUT_S:
        raise InvalidTransfer(f"hold timeout must be 1…{MAX_HOLD_TIMEOUT_S} s, got {timeout_s}")
    if spec.idempotency_key:
        existing = _find_by_key(session, spec.idempotency_key)
        if existing is not None:
            _same_or_conflict(existing, spec, flags=TransferFlags.PENDING)
            return int(existing.id)
    _validate(spec)
    now = now or utcnow()
    plan = _Plan()
    row = _row(spec, now, flags=TransferFlags.PENDING)
    row["expires_at"] = None if timeout_s is None else now + timedelta(seconds=timeout_s)
    plan.rows.append(row)
    plan.delta(spec.debit_account_id).debits_pending += spec.amount
    plan.delta(spec.credit_account_id).credits_pending += spec.amount
    new_id = _apply(session, plan, locked, returning=True)
    assert new_id is not None
    return new_id


_RESOLUTION = transfers.alias("resolution")
_GET_HOLD = (
    select(
        transfers,
        _RESOLUTION.c.flags.label("r_flags"),
        _RESOLUTION.c.amount.label("r_amount"),
        _RESOLUTION.c.created_at.label("r_created_at"),
        _RESOLUTION.c.metadata.label("r_metadata"),
    )
    .select_from(transfers.outerjoin(_RESOLUTION, _RESOLUTION.c.pending_id == transfers.c.id))
    .where(transfers.c.id == bindparam("hold_id"), transfers.c.flags == int(TransferFlags.PENDING))
)
"""A hold and its resolution (the posting or voiding transfer, if any) in one query."""


def get_hold(session: Session, hold_id: int) -> Hold:
    """The hold ``hold_id`` with its status. Raises :class:`TransferNotFound`."""
    row = fast_connection(session).execute(_GET_HOLD, {"hold_id": hold_id}).first()
    if row is None:
        raise TransferNotFound(f"no hold {hold_id}", hold_id=hold_id)
    reason: str | None = None
    if row.r_flags is None:
        status, posted = "pending", 0
    elif row.r_flags & TransferFlags.POST_PENDING:
        status, posted = "posted", int(row.r_amount)
    else:
        status, posted = "voided", 0
        reason = (row.r_metadata or {}).get("reason")
    return Hold(
        id=int(row.id),
        debit_account_id=int(row.debit_account_id),
        credit_account_id=int(row.credit_account_id),
        amount=int(row.amount),
        code=row.code,
        expires_at=row.expires_at,
        status=status,
        posted_amount=posted,
        ref_type=row.ref_type,
        ref_id=None if row.ref_id is None else int(row.ref_id),
        created_at=row.created_at,
        resolved_at=row.r_created_at,
        reason=reason,
    )


def post_hold(
    session: Session,
    hold_id: int,
    amount: int | None = None,
    *,
    now: datetime | None = None,
    ref: tuple[str, int] | None = None,
    locked: Mapping[int, AccountBalance] | None = None,
    hold: Hold | None = None,
) -> int:
    """Post a pending hold for ``amount`` µcr (default: all of it); release the rest.
    ``hold``: the hold as the caller read it in this transaction (not read again).

    ``ref`` (type, id) names what the posting paid for (a captured hold's usage event),
    instead of the hold's own ref; ``locked`` balances the caller read under lock are kept
    current.

    Raises :class:`TransferNotFound`, :class:`HoldNotPending` (already posted or voided),
    :class:`HoldExpired`, :class:`HoldAmountExceeded` (amount > held),
    :class:`InvalidTransfer` (amount ≤ 0; void instead). Returns the posting transfer's id.
    """
    now = now or utcnow()
    if hold is None or hold.id != hold_id:  # not read under the caller's wallet lock
        hold = _locked_hold(session, hold_id)
    amount = hold.amount if amount is None else amount
    problem = holds.posting_problem(hold, amount, now)
    if problem is not None:
        raise problem
    if amount <= 0:
        raise InvalidTransfer("posting amount must be positive; void the hold instead")
    return _resolve(
        session, hold, TransferFlags.POST_PENDING, amount, now, reason=None, ref=ref, locked=locked
    )


def void_hold(
    session: Session, hold_id: int, *, now: datetime | None = None, reason: str = "voided"
) -> int:
    """Void a pending hold, releasing its whole amount. Raises :class:`TransferNotFound`,
    :class:`HoldNotPending`. Returns the voiding transfer's id."""
    hold = _pending_hold(session, _locked_hold(session, hold_id).id)
    return _resolve(session, hold, TransferFlags.VOID_PENDING, hold.amount, now or utcnow(), reason)


def _locked_hold(session: Session, hold_id: int) -> Hold:
    """The hold, read again after locking its debit account: two resolutions of one hold
    (void + void, capture + void) are serialised on that row, so the second sees the first's
    outcome (a typed :class:`HoldNotPending`), and every resolver takes the wallet before
    ``platform_revenue`` (the order charges take them in: no deadlock)."""
    found = get_hold(session, hold_id)
    lock_accounts(session, [found.debit_account_id])
    return get_hold(session, hold_id)


def expire_holds(session: Session, *, now: datetime | None = None, limit: int = 1000) -> int:
    """Void up to ``limit`` pending holds whose timeout has passed; return how many.

    Idempotent and bounded: run it repeatedly until it returns 0.
    """
    return len(expire_holds_detailed(session, now=now, limit=limit))


def expire_holds_detailed(
    session: Session, *, now: datetime | None = None, limit: int = 1000
) -> list[Hold]:
    """:func:`expire_holds` returning the holds it voided (as they were: pending), so that
    callers can tell their owners."""
    now = now or utcnow()
    resolved = select(transfers.c.pending_id).where(transfers.c.pending_id.is_not(None))
    ids = (
        fast_connection(session)
        .execute(
            select(transfers.c.id)
            .where(
                transfers.c.flags == int(TransferFlags.PENDING),
                transfers.c.expires_at <= now,
                transfers.c.id.not_in(resolved),
            )
            .order_by(transfers.c.id)
            .limit(limit)
        )
        .scalars()
    )
    expired: list[Hold] = []
    for hold_id in list(ids):
        expired.append(get_hold(session, int(hold_id)))
        void_hold(session, int(hold_id), now=now, reason="expired")
    return expired


def reverse(
    session: Session,
    transfer_id: int,
    *,
    amount: int | None = None,
    idempotency_key: str,
    now: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Undo (part of) a posted transfer with a reversing transfer pointing to it.

    ``amount`` defaults to what is left unreversed. Raises :class:`TransferNotFound`,
    :class:`InvalidTransfer` (not a posted transfer, or more than is left to reverse),
    :class:`InsufficientFunds` (the credited account no longer holds it and is flagged).
    Idempotent on ``idempotency_key``. Returns the reversing transfer's id.
    """
    conn = fast_connection(session)
    # The key first: a retry of "reverse what is left" must find its first answer even
    # though nothing is left to reverse any more.
    existing = _find_by_key(session, idempotency_key)
    original = conn.execute(select(transfers).where(transfers.c.id == transfer_id)).first()
    if original is None:
        raise TransferNotFound(f"no transfer {transfer_id}", transfer_id=transfer_id)
    if original.flags & (TransferFlags.PENDING | TransferFlags.VOID_PENDING):
        raise InvalidTransfer("only posted transfers can be reversed; void a hold instead")
    reversed_so_far = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
            transfers.c.reverses_id == transfer_id
        )
    ).scalar_one()
    spec = NewTransfer(
        debit_account_id=int(original.credit_account_id),
        credit_account_id=int(original.debit_account_id),
        amount=(
            int(original.amount) - int(reversed_so_far)
            if amount is None and existing is None
            else int(existing.amount if amount is None else amount)
        ),
        code=TransferCode(original.code),
        ref_type=original.ref_type,
        ref_id=original.ref_id,
        idempotency_key=idempotency_key,
        metadata=metadata,
    )
    if existing is not None:
        _same_or_conflict(existing, spec, reverses_id=transfer_id)
        return int(existing.id)
    if spec.amount <= 0 or spec.amount > int(original.amount) - int(reversed_so_far):
        raise InvalidTransfer(
            f"cannot reverse {spec.amount} µcr of transfer {transfer_id}:"
            f" {int(original.amount) - int(reversed_so_far)} µcr left to reverse"
        )
    now = now or utcnow()
    plan = _Plan()
    row = _row(spec, now, flags=TransferFlags.NONE)
    row["reverses_id"] = transfer_id
    plan.rows.append(row)
    plan.delta(spec.debit_account_id).debits_posted += spec.amount
    plan.delta(spec.credit_account_id).credits_posted += spec.amount
    new_id = _apply(session, plan, None, returning=True)
    assert new_id is not None
    return new_id


# ---------------------------------------------------------------- internals


def _validate(spec: NewTransfer) -> None:
    if not isinstance(spec.amount, int) or isinstance(spec.amount, bool) or spec.amount <= 0:
        raise InvalidTransfer(
            f"transfer amount must be a positive integer µcr, got {spec.amount!r}"
        )
    if spec.debit_account_id == spec.credit_account_id:
        raise InvalidTransfer("debit and credit accounts must differ")


def _row(spec: NewTransfer, now: datetime, *, flags: TransferFlags) -> dict[str, Any]:
    return {
        "idempotency_key": spec.idempotency_key,
        "debit_account_id": spec.debit_account_id,
        "credit_account_id": spec.credit_account_id,
        "amount": spec.amount,
        "code": spec.code.value,
        "flags": int(flags),
        "pending_id": None,
        "reverses_id": None,
        "expires_at": None,
        "ref_type": spec.ref_type,
        "ref_id": spec.ref_id,
        "created_at": now,
        "metadata": dict(spec.metadata) if spec.metadata else None,
    }


def _apply(
    session: Session,
    plan: _Plan,
    locked: Mapping[int, AccountBalance] | None,
    *,
    returning: bool = False,
    existing: Iterable[int] = (),
    bulk_rows: list[tuple[Any, ...]] | None = None,
) -> int | None:
    """Check flagged accounts against the plan's deltas, then insert and update.

    With ``returning`` (single-row plans) the new transfer's id is returned."""
    falling = _falling(plan)
    known = _lock_falling(session, falling, locked)
    _check_accounts_exist(session, plan, known, existing)
    _check_funds(known, falling)
    conn = fast_connection(session)
    new_id = _insert_rows(conn, plan, returning=returning, bulk_rows=bulk_rows)
    _update_totals(conn, plan)
    # Keep the caller's locked view current so a later call in the same transaction sees it.
    if locked is not None:
        _refresh_locked(locked, plan)
    return new_id


def _falling(plan: _Plan) -> dict[int, int]:
    """Account id → µcr by which the plan lowers its available balance (only those it lowers)."""
    return {
        account_id: delta.debits_posted + delta.debits_pending - delta.credits_posted
        for account_id, delta in plan.deltas.items()
        if delta.debits_posted + delta.debits_pending - delta.credits_posted > 0
    }


def _lock_falling(
    session: Session, falling: Mapping[int, int], locked: Mapping[int, AccountBalance] | None
) -> dict[int, AccountBalance]:
    """The caller's ``locked`` accounts plus, read under lock, the non-platform ``falling``
    accounts (those whose available balance goes down) the caller has not locked."""
    # Only an account whose available balance goes down can break its flag: read (and lock)
    # just those. Accounts only credited are locked by their UPDATE, late, which keeps the
    # hot platform_revenue row locked for as short a time as possible (DESIGN §16).
    known = dict(locked or {})
    # Platform accounts are never flagged (nothing to check): they are left to be locked by
    # their UPDATE, late. Reading one under lock here (a captured hold paying earnings out
    # of platform_revenue) held the hottest row for the rest of the transaction and
    # deadlocked against charges taking it in the other order.
    platform = _platform_ids.get(fast_connection(session).engine, {}).values()
    missing = [a for a in falling if a not in known and a not in platform]
    if missing:
        known.update(lock_accounts(session, missing))
    return known


def _check_accounts_exist(
    session: Session,
    plan: _Plan,
    known: Mapping[int, AccountBalance],
    existing: Iterable[int],
) -> None:
    """Raise :class:`AccountNotFound` for the first (lowest id) account of the plan that is
    neither ``known`` (read under lock), ``existing`` (vouched for by the caller) nor stored."""
    seen = set(existing)
    unseen = sorted(a for a in plan.deltas if a not in known and a not in seen)
    if unseen:
        present = set(fast_connection(session).execute(_ACCOUNT_IDS, {"ids": unseen}).scalars())
        absent = [a for a in unseen if a not in present]
        if absent:
            raise AccountNotFound(f"no account {absent[0]}", account_id=absent[0])


def _check_funds(known: Mapping[int, AccountBalance], falling: Mapping[int, int]) -> None:
    """Raise :class:`InsufficientFunds` when a flagged account would need more than its
    available µcr (``falling``: account id → µcr needed)."""
    for account_id, needed in falling.items():
        account = known.get(account_id)
        if account is None:  # a platform account: unflagged
            continue
        if not account.flagged:
            continue
        available = account.available
        # Releasing a hold (negative pending delta) frees credit for the posting it pays for.
        if needed > available:
            raise InsufficientFunds(
                f"account {account_id} ({account.code}) has {available} µcr available,"
                f" {needed} µcr needed",
                account_id=account_id,
                available_ucr=available,
                needed_ucr=needed,
            )


def _insert_rows(
    conn: Connection,
    plan: _Plan,
    *,
    returning: bool,
    bulk_rows: list[tuple[Any, ...]] | None,
) -> int | None:
    """Insert the plan's transfers (``bulk_rows``: the linked fast path); with ``returning``
    (single-row plans) return the new transfer's id."""
    if bulk_rows is not None:
        _INSERT_LINKED.execute(conn, bulk_rows)
    elif returning:
        assert len(plan.rows) == 1
        return int(conn.execute(_INSERT_RETURNING_ID, plan.rows[0]).scalar_one())
    else:
        conn.execute(insert(transfers), plan.rows)
    return None


def _update_totals(conn: Connection, plan: _Plan) -> None:
    """Add the plan's deltas to the accounts' totals, in account id order. Raises
    :class:`AccountTotalLimit` when a running total would pass ``MAX_ACCOUNT_TOTAL`` µcr."""
    try:
        _UPDATE_TOTALS_FAST.executemany(
            conn,
            [
                (d.debits_posted, d.credits_posted, d.debits_pending, d.credits_pending, account_id)
                for account_id, d in sorted(plan.deltas.items())
            ],
        )
    except Exception as exc:  # the driver's IntegrityError: sqlite3's or psycopg's
        if _TOTALS_BOUNDED not in str(exc):
            raise
        raise AccountTotalLimit(
            f"a transfer would carry an account's running total past {MAX_ACCOUNT_TOTAL} µcr",
            limit_ucr=MAX_ACCOUNT_TOTAL,
        ) from None


def _refresh_locked(locked: Mapping[int, AccountBalance], plan: _Plan) -> None:
    """Apply the plan's deltas to the caller's locked accounts."""
    for account_id, delta in plan.deltas.items():
        if account_id in locked:
            account = locked[account_id]
            account.debits_posted += delta.debits_posted
            account.credits_posted += delta.credits_posted
            account.debits_pending += delta.debits_pending
            account.credits_pending += delta.credits_pending


def _pending_hold(session: Session, hold_id: int) -> Hold:
    hold = get_hold(session, hold_id)
    problem = holds.void_problem(hold)
    if problem is not None:
        raise problem
    return hold


def _resolve(
    session: Session,
    hold: Hold,
    flag: TransferFlags,
    amount: int,
    now: datetime,
    reason: str | None,
    *,
    ref: tuple[str, int] | None = None,
    locked: Mapping[int, AccountBalance] | None = None,
) -> int:
    plan = _Plan()
    row = _row(
        NewTransfer(
            debit_account_id=hold.debit_account_id,
            credit_account_id=hold.credit_account_id,
            amount=amount,
            code=TransferCode(hold.code),
            ref_type=ref[0] if ref else hold.ref_type,
            ref_id=ref[1] if ref else hold.ref_id,
            metadata={"reason": reason} if reason else None,
        ),
        now,
        flags=flag,
    )
    row["pending_id"] = hold.id
    plan.rows.append(row)
    debit, credit = plan.delta(hold.debit_account_id), plan.delta(hold.credit_account_id)
    debit.debits_pending -= hold.amount
    credit.credits_pending -= hold.amount
    if flag is TransferFlags.POST_PENDING:
        debit.debits_posted += amount
        credit.credits_posted += amount
    new_id = _apply(session, plan, locked, returning=True)
    assert new_id is not None
    return new_id


_INSERT_RETURNING_ID = insert(transfers).returning(transfers.c.id)
_BY_KEY = select(transfers).where(transfers.c.idempotency_key == bindparam("key"))


def _find_by_key(session: Session, key: str) -> Any:
    return fast_connection(session).execute(_BY_KEY, {"key": key}).first()


def _same_or_conflict(
    existing: Any,
    spec: NewTransfer,
    *,
    flags: TransferFlags = TransferFlags.NONE,
    reverses_id: int | None = None,
) -> None:
    """Raise :class:`IdempotencyConflict` unless the stored transfer is this very request:
    same accounts, amount, code, kind (plain, hold, reversal of the same transfer) and ref."""
    stored = (
        int(existing.debit_account_id),
        int(existing.credit_account_id),
        int(existing.amount),
        existing.code,
        int(existing.flags),
        existing.reverses_id,
        existing.ref_type,
        existing.ref_id,
    )
    asked = (
        spec.debit_account_id,
        spec.credit_account_id,
        spec.amount,
        spec.code.value,
        int(flags),
        reverses_id,
        spec.ref_type,
        spec.ref_id,
    )
    if stored != asked:
        raise IdempotencyConflict(
            f"idempotency key {spec.idempotency_key!r} was used for a different transfer",
            idempotency_key=spec.idempotency_key,
        )
