"""Grants and burn-down (DESIGN §5).

Every credit that enters a wallet arrives as a **grant** (source, cost basis in µUSD,
optional expiry, priority); every credit that leaves it **burns** grants in order:

1. soonest ``expires_at`` first (grants that never expire last),
2. then lower ``priority`` first (defaults: bonus 10, refund 20, deposit 30, purchased 40,
   so bonus credits burn before purchased ones),
3. then the oldest grant first (``id``).

Each burn is a row of ``grant_burns`` naming the grant, the amount (µcr) and the part of the
grant's cost basis it carries (µUSD, exact in total), and what it paid for (``ref_type``,
``ref_id``: the usage id of a charge, …). The invariant, checked by :func:`check`: for every
user, the remainders of their grants sum to their wallet's posted balance.

A grant may carry a **rollover rule** (``grant_rollovers``: subscription periods): when it
expires, that fraction of what the sweep would take becomes a new grant with its part of the
cost basis instead (:meth:`GrantBook._roll_over`).

Expired remainders are swept to ``platform_promotions`` (transfer code ``expiry``) by the jobs
(:func:`sweep_expired`) and, lazily, by any spend that touches the wallet first
(:meth:`GrantBook.load`), so an expired credit is never spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.db.bulk import BulkInsert, db_timestamp
from modelbank.db.fast import FastSQL, Read, read_timestamp
from modelbank.db.fast import connection as fast_connection
from modelbank.errors import DomainError, IdempotencyConflict, InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.models import accounts_table as accounts
from modelbank.money import div_half_even
from modelbank.wallets import alerts
from modelbank.wallets.billing_models import rollovers_table as rollovers
from modelbank.wallets.models import burns_table as burns
from modelbank.wallets.models import grants_table as grants


class GrantSource(StrEnum):
    """Where granted credits come from (DESIGN §5)."""

    PURCHASED = "purchased"
    """Paid for: issued against cash from ``world_sales``; carries a cost basis."""
    BONUS = "bonus"
    """Free: from ``platform_promotions``."""
    REFUND = "refund"
    """A goodwill credit from ``platform_revenue`` (refunds of charges return to the grants
    they burned instead)."""
    DEPOSIT = "deposit"
    """Credit for provider quota deposited in the resource pool (``pool_deposits``)."""


DEFAULT_PRIORITY: Mapping[GrantSource, int] = {
    GrantSource.BONUS: 10,
    GrantSource.REFUND: 20,
    GrantSource.DEPOSIT: 30,
    GrantSource.PURCHASED: 40,
}
"""Burn priority by source (lower burns first, after expiry): bonus before purchased."""

SOURCE_ACCOUNT: Mapping[GrantSource, tuple[AccountCode, TransferCode]] = {
    GrantSource.PURCHASED: (AccountCode.WORLD_SALES, TransferCode.PURCHASE),
    GrantSource.BONUS: (AccountCode.PLATFORM_PROMOTIONS, TransferCode.GRANT),
    GrantSource.REFUND: (AccountCode.PLATFORM_REVENUE, TransferCode.REFUND),
    GrantSource.DEPOSIT: (AccountCode.POOL_DEPOSITS, TransferCode.DEPOSIT),
}
"""The account a grant's credits come from, and the transfer's code."""

SWEEP_BATCH = 500
"""Expired grants swept per call of :func:`sweep_expired` (bounded work per transaction)."""


class GrantsOutOfBalance(DomainError):
    """A wallet's grants do not cover a debit: the grants/balance invariant is broken (a
    bug or a hand-edited database; ``modelbank verify`` reports it)."""

    code = "grants_out_of_balance"


@dataclass(frozen=True, slots=True)
class GrantInfo:
    """A grant as stored. Amounts in µcr, cost basis in µUSD."""

    id: int
    user_id: int
    source: str
    amount_ucr: int
    remaining_ucr: int
    cost_basis_uusd: int
    priority: int
    expires_at: datetime | None
    transfer_id: int | None
    purchase_id: int | None
    created_at: datetime


def basis_of(consumed_ucr: int, amount_ucr: int, basis_uusd: int) -> int:
    """The cost basis (µUSD) carried by the first ``consumed_ucr`` of a grant of
    ``amount_ucr`` that cost ``basis_uusd``: ``basis × consumed / amount`` rounded half-even.
    A burn's basis is the difference of this before and after it, so a grant's burns always
    sum to exactly its basis when it is used up."""
    if amount_ucr <= 0 or basis_uusd == 0:
        return 0
    return div_half_even(basis_uusd * consumed_ucr, amount_ucr)


_NEVER = datetime.max.replace(tzinfo=UTC)


def burn_key(expires_at: datetime | None, priority: int, grant_id: int) -> tuple[Any, ...]:
    """The burn-down sort key of a grant (DESIGN §5): soonest expiry (never last), then
    priority, then oldest."""
    return (expires_at or _NEVER, priority, grant_id)


# ---------------------------------------------------------------- issuing


def issue(
    session: Session,
    user_id: int,
    wallet_account_id: int,
    amount_ucr: int,
    *,
    source: GrantSource,
    idempotency_key: str,
    cost_basis_uusd: int = 0,
    expires_at: datetime | None = None,
    priority: int | None = None,
    purchase_id: int | None = None,
    ref: tuple[str, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> GrantInfo:
    """Credit ``amount_ucr`` µcr to the wallet as a grant; return it.

    The transfer comes from the source's account (:data:`SOURCE_ACCOUNT`). Idempotent on
    ``idempotency_key``: a retry returns the first grant. Raises :class:`InvalidInput`
    (amount ≤ 0, negative cost basis, a naive or past ``expires_at``),
    :class:`~modelbank.errors.IdempotencyConflict`.
    """
    now = now or utcnow()
    source = GrantSource(source)
    _check_grant(amount_ucr, cost_basis_uusd, expires_at, now)
    transfer_id = _grant_transfer(
        session,
        user_id,
        wallet_account_id,
        amount_ucr,
        source=source,
        idempotency_key=idempotency_key,
        expires_at=expires_at,
        ref=ref,
        metadata=metadata,
        now=now,
    )
    conn = fast_connection(session)
    found = conn.execute(select(grants).where(grants.c.transfer_id == transfer_id)).first()
    wanted_priority = DEFAULT_PRIORITY[source] if priority is None else priority
    if found is not None:  # a retry: the first grant, if it is this very request
        return _same_grant(
            _info(found), cost_basis_uusd, expires_at, wanted_priority, purchase_id, idempotency_key
        )
    values = {
        "user_id": user_id,
        "source": source.value,
        "amount_ucr": amount_ucr,
        "remaining_ucr": amount_ucr,
        "cost_basis_uusd": cost_basis_uusd,
        "priority": wanted_priority,
        "expires_at": expires_at,
        "transfer_id": transfer_id,
        "purchase_id": purchase_id,
        "created_at": now,
    }
    grant_id = conn.execute(grants.insert().returning(grants.c.id), values).scalar_one()
    return GrantInfo(id=int(grant_id), **values)  # type: ignore[arg-type]


def _same_grant(
    first: GrantInfo,
    cost_basis_uusd: int,
    expires_at: datetime | None,
    priority: int,
    purchase_id: int | None,
    idempotency_key: str,
) -> GrantInfo:
    """The grant ``first`` issued under ``idempotency_key``; raises
    :class:`~modelbank.errors.IdempotencyConflict` when it differs from the one asked now."""
    if (first.cost_basis_uusd, first.expires_at, first.priority, first.purchase_id) != (
        cost_basis_uusd,
        expires_at,
        priority,
        purchase_id,
    ):
        raise IdempotencyConflict(
            f"idempotency key {idempotency_key!r} was used for a different grant",
            idempotency_key=idempotency_key,
        )
    return first


def _check_grant(
    amount_ucr: int, cost_basis_uusd: int, expires_at: datetime | None, now: datetime
) -> None:
    """Raise :class:`InvalidInput` unless ``amount_ucr`` is a positive integer µcr, the cost
    basis (µUSD) is not negative and ``expires_at`` (if any) is aware and after ``now``."""
    if not isinstance(amount_ucr, int) or isinstance(amount_ucr, bool) or amount_ucr <= 0:
        raise InvalidInput(f"grant amount must be a positive integer µcr, got {amount_ucr!r}")
    if cost_basis_uusd < 0:
        raise InvalidInput("cost basis cannot be negative")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput("expires_at must carry a time zone")
        if expires_at <= now:
            raise InvalidInput("expires_at must be in the future")


def _grant_transfer(
    session: Session,
    user_id: int,
    wallet_account_id: int,
    amount_ucr: int,
    *,
    source: GrantSource,
    idempotency_key: str,
    expires_at: datetime | None,
    ref: tuple[str, int] | None,
    metadata: Mapping[str, Any] | None,
    now: datetime,
) -> int:
    """Post ``amount_ucr`` µcr source account (:data:`SOURCE_ACCOUNT`) → wallet, idempotent on
    ``idempotency_key`` (ref: ``ref``, else the user); return the transfer's id. Raises
    :class:`~modelbank.errors.IdempotencyConflict`."""
    account_code, transfer_code = SOURCE_ACCOUNT[source]
    details: dict[str, Any] = {"source": source.value, **(metadata or {})}
    if expires_at is not None:
        details["expires_at"] = expires_at.isoformat()
    ref_type, ref_id = ref if ref is not None else ("user", user_id)
    return ledger.transfer(
        session,
        ledger.NewTransfer(
            debit_account_id=ledger.platform_account(session, account_code),
            credit_account_id=wallet_account_id,
            amount=amount_ucr,
            code=transfer_code,
            ref_type=ref_type,
            ref_id=ref_id,
            idempotency_key=idempotency_key,
            metadata=details,
        ),
        now=now,
    )


def list_grants(
    session: Session,
    user_id: int,
    *,
    open_only: bool = False,
    after_id: int = 0,
    limit: int = 100,
) -> list[GrantInfo]:
    """A user's grants by id (``open_only``: with credits left), at most ``limit``."""
    query = select(grants).where(grants.c.user_id == user_id, grants.c.id > after_id)
    if open_only:
        query = query.where(grants.c.remaining_ucr > 0)
    rows = fast_connection(session).execute(query.order_by(grants.c.id).limit(limit))
    return [_info(row) for row in rows]


def get_grant(session: Session, grant_id: int) -> GrantInfo | None:
    """The grant ``grant_id`` or None."""
    row = fast_connection(session).execute(select(grants).where(grants.c.id == grant_id)).first()
    return None if row is None else _info(row)


def _info(row: Any) -> GrantInfo:
    return GrantInfo(
        id=int(row.id),
        user_id=int(row.user_id),
        source=row.source,
        amount_ucr=int(row.amount_ucr),
        remaining_ucr=int(row.remaining_ucr),
        cost_basis_uusd=int(row.cost_basis_uusd),
        priority=int(row.priority),
        expires_at=row.expires_at,
        transfer_id=None if row.transfer_id is None else int(row.transfer_id),
        purchase_id=None if row.purchase_id is None else int(row.purchase_id),
        created_at=row.created_at,
    )


def receive(
    session: Session,
    user_id: int,
    amount_ucr: int,
    *,
    transfer_id: int,
    cost_basis_uusd: int,
    now: datetime,
    source: GrantSource,
) -> GrantInfo:
    """Record as a grant ``amount_ucr`` µcr that the caller has already moved into the
    user's wallet by transfer ``transfer_id`` (in the same transaction): credits from another
    user, as a trade, whose debit burned that user's grants. Posts no transfer (unlike
    :func:`issue`). ``cost_basis_uusd`` is the basis the burned grants carried, so cash basis
    follows the credits; no expiry; the source's default priority.
    Raises :class:`InvalidInput` (amount ≤ 0, negative basis)."""
    if not isinstance(amount_ucr, int) or isinstance(amount_ucr, bool) or amount_ucr <= 0:
        raise InvalidInput(f"grant amount must be a positive integer µcr, got {amount_ucr!r}")
    if cost_basis_uusd < 0:
        raise InvalidInput("cost basis cannot be negative")
    source = GrantSource(source)
    values = {
        "user_id": user_id,
        "source": source.value,
        "amount_ucr": amount_ucr,
        "remaining_ucr": amount_ucr,
        "cost_basis_uusd": cost_basis_uusd,
        "priority": DEFAULT_PRIORITY[source],
        "expires_at": None,
        "transfer_id": transfer_id,
        "purchase_id": None,
        "created_at": now,
    }
    grant_id = fast_connection(session).execute(grants.insert().returning(grants.c.id), values)
    return GrantInfo(id=int(grant_id.scalar_one()), **values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- burn-down


@dataclass(slots=True)
class _Open:
    """An open grant in memory while a transaction spends from it."""

    id: int
    user_id: int
    source: str
    amount: int
    remaining: int
    basis: int
    expires_at: datetime | None
    priority: int
    original: int = 0
    dirty: bool = False

    def consumed(self) -> int:
        return self.amount - self.remaining


_OPEN_GRANTS_FAST = FastSQL(
    "SELECT id, user_id, source, amount_ucr, remaining_ucr, cost_basis_uusd, expires_at,"
    " priority FROM grants WHERE user_id IN ({in}) AND remaining_ucr > 0 ORDER BY user_id, id"
)
_SET_REMAINING_FAST = FastSQL("UPDATE grants SET remaining_ucr = ? WHERE id = ?")
_INSERT_BURNS = BulkInsert(
    burns,
    (
        "grant_id",
        "user_id",
        "source",
        "amount_ucr",
        "basis_uusd",
        "ref_type",
        "ref_id",
        "created_at",
    ),
)
_EXPIRY = TransferCode.EXPIRY.value


def open_grants_read(user_ids: Iterable[int]) -> Read:
    """The read :meth:`GrantBook.load` runs for these users' open grants."""
    users = sorted(set(user_ids))
    return _OPEN_GRANTS_FAST.read(users, size=len(users))


@dataclass
class GrantBook:
    """The open grants of some users, loaded under their wallets' locks, spent in memory and
    written back with :meth:`flush` (one UPDATE ``executemany`` and one INSERT of burn rows
    per batch, whatever its size: DESIGN §16)."""

    by_user: dict[int, list[_Open]] = field(default_factory=dict)
    burn_rows: list[tuple[int, int, str, int, int, str, int | None]] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        session: Session,
        wallets: Mapping[int, ledger.AccountBalance],
        *,
        now: datetime,
    ) -> GrantBook:
        """Load the open grants of the users whose locked wallets are ``wallets`` (user id →
        balance read under lock) and sweep the expired ones first, updating those balances.

        The caller holds the wallets' locks for the whole transaction
        (:func:`~modelbank.ledger.service.lock_user_accounts`) and ends with :meth:`flush`."""
        book = cls()
        if not wallets:
            return book
        read = open_grants_read(wallets)
        rows = read.sql.execute(fast_connection(session), read.params, size=read.size)
        for grant_id, user_id, source, amount, remaining, basis, expires, priority in rows:
            book.by_user.setdefault(int(user_id), []).append(
                _Open(
                    id=int(grant_id),
                    user_id=int(user_id),
                    source=source,
                    amount=int(amount),
                    remaining=int(remaining),
                    basis=int(basis),
                    expires_at=read_timestamp(expires),
                    priority=int(priority),
                    original=int(remaining),
                )
            )
        for open_grants in book.by_user.values():
            open_grants.sort(key=lambda g: burn_key(g.expires_at, g.priority, g.id))
        book._sweep(session, wallets, now)
        return book

    def _sweep(
        self, session: Session, wallets: Mapping[int, ledger.AccountBalance], now: datetime
    ) -> None:
        transfers: list[ledger.LinkedRow] = []
        promotions: int | None = None
        rules = _rollover_rules(session, self.by_user.values(), now)
        for user_id, open_grants in list(self.by_user.items()):
            wallet = wallets[user_id]
            # Credits reserved by pending holds stay until the holds resolve. They are
            # attributed to grants in burn-down order (the order a capture would burn them
            # in), so an expired grant keeps what holds reserved of it and loses the rest.
            reserved = max(wallet.debits_pending, 0)
            for grant in list(open_grants):  # a rollover adds a grant to the list
                kept = min(reserved, grant.remaining)
                reserved -= kept
                if grant.expires_at is None or grant.expires_at > now:
                    continue
                amount = grant.remaining - kept
                if amount <= 0:
                    continue
                rule = rules.get(grant.id)
                if rule is not None:
                    amount -= self._roll_over(session, grant, amount, rule, now, kept == 0)
                    if amount <= 0:
                        continue
                self._take(grant, amount, "expiry", grant.id)
                if promotions is None:
                    promotions = ledger.platform_account(session, AccountCode.PLATFORM_PROMOTIONS)
                transfers.append((wallet.id, promotions, amount, _EXPIRY, grant.id))
        if transfers:
            ledger.post_linked(
                session,
                transfers,
                ref_type="grant",
                now=now,
                locked={w.id: w for w in wallets.values()},
            )

    def _roll_over(
        self, session: Session, grant: _Open, amount: int, rule: Any, now: datetime, final: bool
    ) -> int:
        """Move ``rollover_bps`` of ``amount`` (µcr the sweep would expire), rounded down to
        the µcr, from ``grant`` into a new grant of the same source and priority expiring at
        the rule's ``rolled_expires_at``; it carries exactly the cost basis those credits
        carried in ``grant`` (:func:`basis_of` differences, half-even on the cumulative
        share: the two grants' bases still sum to the original). No transfer: the credits
        stay in the wallet. Returns the µcr rolled (0 when nothing rolls, or when the new
        grant would already have expired). The rule is marked applied only when ``final``
        (no pending hold keeps credits of the grant): what a hold kept is rolled over by a
        later sweep, once the hold is voided or captured."""
        rolled = amount * int(rule.rollover_bps) // BPS
        if rolled <= 0 or rule.rolled_expires_at <= now:
            return 0
        basis = self._take(grant, rolled, "rollover", grant.id)
        conn = fast_connection(session)
        new_id = int(
            conn.execute(
                grants.insert().returning(grants.c.id),
                {
                    "user_id": grant.user_id,
                    "source": grant.source,
                    "amount_ucr": rolled,
                    "remaining_ucr": rolled,
                    "cost_basis_uusd": basis,
                    "priority": grant.priority,
                    "expires_at": rule.rolled_expires_at,
                    "transfer_id": None,
                    "purchase_id": None,
                    "created_at": now,
                },
            ).scalar_one()
        )
        if final:
            conn.execute(
                rollovers.update()
                .where(rollovers.c.grant_id == grant.id)
                .values(rolled_grant_id=new_id)
            )
        mine = self.by_user.setdefault(grant.user_id, [])
        mine.append(
            _Open(
                id=new_id,
                user_id=grant.user_id,
                source=grant.source,
                amount=rolled,
                remaining=rolled,
                basis=basis,
                expires_at=rule.rolled_expires_at,
                priority=grant.priority,
                original=rolled,
            )
        )
        mine.sort(key=lambda g: burn_key(g.expires_at, g.priority, g.id))
        return rolled

    def _take(self, grant: _Open, amount: int, ref_type: str, ref_id: int | None) -> int:
        before = grant.consumed()
        grant.remaining -= amount
        grant.dirty = True
        basis = basis_of(grant.consumed(), grant.amount, grant.basis) - basis_of(
            before, grant.amount, grant.basis
        )
        self.burn_rows.append(
            (grant.id, grant.user_id, grant.source, amount, basis, ref_type, ref_id)
        )
        return basis

    def remaining(self, user_id: int, grant_id: int) -> int:
        """What is left of one of the loaded user's grants (µcr; 0 when used up or swept)."""
        for grant in self.by_user.get(user_id, ()):
            if grant.id == grant_id:
                return grant.remaining
        return 0

    def take(
        self, user_id: int, grant_id: int, amount_ucr: int, ref_type: str, ref_id: int | None
    ) -> int:
        """Take ``amount_ucr`` µcr from one grant, out of burn-down order (a purchase refund
        reverses its own grant); return the cost basis (µUSD) they carried. Raises
        :class:`GrantsOutOfBalance` when the grant has less left."""
        for grant in self.by_user.get(user_id, ()):
            if grant.id == grant_id and grant.remaining >= amount_ucr:
                return self._take(grant, amount_ucr, ref_type, ref_id)
        raise GrantsOutOfBalance(
            f"grant {grant_id} of user {user_id} has less than {amount_ucr} µcr left",
            user_id=user_id,
        )

    def burn(
        self, user_id: int, amount_ucr: int, ref_type: str, ref_id: int | None, *, now: datetime
    ) -> list[tuple[int, int]]:
        """Take ``amount_ucr`` µcr from the user's grants in burn-down order; return
        ``[(grant id, µcr)]``. Live grants first; expired ones only for what is left (their
        remainders are there because pending holds reserve them).
        Raises :class:`GrantsOutOfBalance` when the grants do not cover it."""
        taken: list[tuple[int, int]] = []
        left = amount_ucr
        mine = self.by_user.get(user_id, [])
        live = [g for g in mine if g.expires_at is None or g.expires_at > now]
        # Expired grants still holding credits are reserved by pending holds (the sweep
        # leaves those): a captured hold may spend them, after the live grants.
        expired = [g for g in mine if g.expires_at is not None and g.expires_at <= now]
        for grant in (*live, *expired):
            if left <= 0:
                break
            if grant.remaining <= 0:
                continue
            amount = min(grant.remaining, left)
            self._take(grant, amount, ref_type, ref_id)
            taken.append((grant.id, amount))
            left -= amount
        if left > 0:
            raise GrantsOutOfBalance(
                f"the grants of user {user_id} lack {left} µcr of a {amount_ucr} µcr debit",
                user_id=user_id,
            )
        return taken

    def flush(self, session: Session, *, now: datetime) -> None:
        """Write the changed remainders and the burn rows (the caller's transaction)."""
        changed = [
            (g.remaining, g.id)
            for open_grants in self.by_user.values()
            for g in open_grants
            if g.dirty
        ]
        if not changed:
            return
        conn = fast_connection(session)
        _SET_REMAINING_FAST.executemany(conn, changed)
        created = db_timestamp(conn.dialect.name, now)
        _INSERT_BURNS.execute(conn, [(*row, created) for row in self.burn_rows])
        for open_grants in self.by_user.values():
            for g in open_grants:
                g.dirty = False
                g.original = g.remaining
        self.burn_rows.clear()


def spend(
    session: Session,
    user_id: int,
    wallet: ledger.AccountBalance,
    amount_ucr: int,
    *,
    ref_type: str,
    ref_id: int | None,
    now: datetime,
) -> list[tuple[int, int]]:
    """Burn ``amount_ucr`` of one user's grants for a debit the caller posts in the same
    transaction (under the wallet's lock, ``wallet`` read with it). Returns the burns.
    Raises :class:`GrantsOutOfBalance`."""
    book = GrantBook.load(session, {user_id: wallet}, now=now)
    taken = book.burn(user_id, amount_ucr, ref_type, ref_id, now=now)
    book.flush(session, now=now)
    return taken


def restore(
    session: Session,
    burned: Iterable[tuple[int, int]],
    amount_ucr: int,
    *,
    ref_type: str,
    ref_id: int | None,
    now: datetime,
) -> list[tuple[int, int]]:
    """Return ``amount_ucr`` µcr to the grants it was burned from, the last burned first.

    ``burned``: ``[(grant id, µcr)]`` in burn order, net of earlier restores. Writes negative
    burn rows (``ref_type``, e.g. ``usage_refund``). A restored credit of an expired grant is
    swept again by the next sweep: it had expired. Returns ``[(grant id, µcr)]`` restored.
    Raises :class:`InvalidInput` when more is asked than was burned."""
    plan: list[tuple[int, int]] = []
    left = amount_ucr
    for grant_id, amount in reversed(list(burned)):
        if left <= 0:
            break
        take = min(amount, left)
        if take > 0:
            plan.append((grant_id, take))
            left -= take
    if left > 0:
        raise InvalidInput(f"cannot return {amount_ucr} µcr: only {amount_ucr - left} µcr burned")
    if not plan:
        return []
    conn = fast_connection(session)
    rows = {
        int(row.id): row
        for row in conn.execute(select(grants).where(grants.c.id.in_([g for g, _ in plan])))
    }
    burn_rows = []
    for grant_id, amount in plan:
        row = rows[grant_id]
        total, remaining, basis = (
            int(row.amount_ucr),
            int(row.remaining_ucr),
            int(row.cost_basis_uusd),
        )
        consumed = total - remaining
        back = basis_of(consumed - amount, total, basis) - basis_of(consumed, total, basis)
        _SET_REMAINING_FAST.executemany(conn, [(remaining + amount, grant_id)])
        burn_rows.append((grant_id, int(row.user_id), row.source, -amount, back, ref_type, ref_id))
    created = db_timestamp(conn.dialect.name, now)
    _INSERT_BURNS.execute(conn, [(*r, created) for r in burn_rows])
    return plan


def burns_for(
    session: Session, ref_type: str, ref_ids: Iterable[int]
) -> dict[int, list[tuple[int, int]]]:
    """Net burns per ref: ref id → ``[(grant id, µcr)]`` in burn order, counting the
    restores written against the same ref under ``<ref_type>_refund``."""
    ids = list(ref_ids)
    if not ids:
        return {}
    query = (
        select(burns.c.ref_id, burns.c.grant_id, burns.c.amount_ucr, burns.c.ref_type)
        .where(
            burns.c.ref_type.in_([ref_type, f"{ref_type}_refund"]),
            burns.c.ref_id.in_(ids),
        )
        .order_by(burns.c.id)
    )
    out: dict[int, dict[int, int]] = {}
    for row in fast_connection(session).execute(query):
        per_ref = out.setdefault(int(row.ref_id), {})
        per_ref[int(row.grant_id)] = per_ref.get(int(row.grant_id), 0) + int(row.amount_ucr)
    return {ref: [(g, a) for g, a in grants_.items() if a > 0] for ref, grants_ in out.items()}


BPS = 10_000
"""Basis points in a whole (rollover fractions)."""


def _rollover_rules(
    session: Session, books: Iterable[list[_Open]], now: datetime
) -> dict[int, Any]:
    """The rollover rules not yet applied of the loaded grants that have expired (one query,
    only when some grant has expired): grant id → row."""
    expired = [
        g.id
        for open_grants in books
        for g in open_grants
        if g.expires_at is not None and g.expires_at <= now and g.remaining > 0
    ]
    if not expired:
        return {}
    rows = fast_connection(session).execute(
        select(rollovers).where(
            rollovers.c.grant_id.in_(expired), rollovers.c.rolled_grant_id.is_(None)
        )
    )
    return {int(row.grant_id): row for row in rows}


def set_rollover(
    session: Session, grant_id: int, *, rollover_bps: int, rolled_expires_at: datetime
) -> None:
    """Give grant ``grant_id`` (which must expire) a rollover rule: when it expires,
    ``rollover_bps`` (1–10,000) of what the sweep would take moves into a new grant expiring
    at ``rolled_expires_at`` (see :meth:`GrantBook._roll_over`). Idempotent (a second call
    keeps the first rule). Raises :class:`InvalidInput` for a fraction out of range."""
    if not 0 < rollover_bps <= BPS:
        raise InvalidInput("rollover_bps must be 1–10000", rollover_bps=rollover_bps)
    conn = fast_connection(session)
    if conn.execute(select(rollovers.c.grant_id).where(rollovers.c.grant_id == grant_id)).first():
        return
    conn.execute(
        rollovers.insert().values(
            grant_id=grant_id, rollover_bps=rollover_bps, rolled_expires_at=rolled_expires_at
        )
    )


def sweep_expired(
    session: Session, *, now: datetime | None = None, limit: int = SWEEP_BATCH
) -> int:
    """Sweep the expired grant remainders of up to ``limit`` users (lowest user ids first)
    to ``platform_promotions``; return how many grants were swept. See
    :func:`sweep_expired_page` to walk every user."""
    return sweep_expired_page(session, now=now, limit=limit)[0]


def sweep_expired_page(
    session: Session, *, now: datetime | None = None, limit: int = SWEEP_BATCH, after_user: int = 0
) -> tuple[int, int | None]:
    """Sweep the expired remainders of up to ``limit`` users with ids above ``after_user``,
    locking their wallets; return (grants swept, the last user id looked at, or None when no
    user was left). Credits reserved by pending holds stay (a user may then sweep nothing),
    so walk the pages with the returned cursor until it is None: bounded work per
    transaction, and no user starves the others. Idempotent: a swept grant has nothing left.
    Re-checks the owners' low-balance alerts."""
    now = now or utcnow()
    conn = fast_connection(session)
    users = [
        int(u)
        for u in conn.execute(
            select(grants.c.user_id)
            .where(
                grants.c.remaining_ucr > 0,
                grants.c.expires_at <= now,
                grants.c.user_id > after_user,
            )
            .group_by(grants.c.user_id)
            .order_by(grants.c.user_id)
            .limit(limit)
        ).scalars()
    ]
    if not users:
        return 0, None
    wallets = ledger.lock_user_accounts(session, users, AccountCode.USER_WALLET)
    book = GrantBook.load(session, wallets, now=now)
    swept = len({row[0] for row in book.burn_rows})
    book.flush(session, now=now)
    alerts.check(session, users, now=now)
    return swept, users[-1]


# ---------------------------------------------------------------- reading, checking


@dataclass(frozen=True, slots=True)
class Recognition:
    """Credits burned by usage charges in a period, by grant source (µcr), and the cash basis
    of the purchased part (µUSD): revenue recognised on purchased credits (DESIGN §5).
    Refunds of charges are netted out."""

    by_source_ucr: dict[str, int]
    purchased_basis_uusd: int

    @property
    def purchased_ucr(self) -> int:
        return self.by_source_ucr.get(GrantSource.PURCHASED.value, 0)

    @property
    def bonus_ucr(self) -> int:
        return self.by_source_ucr.get(GrantSource.BONUS.value, 0)


def recognition(session: Session, *, since: datetime | None = None) -> Recognition:
    """Usage burns (net of usage refunds) since ``since`` (all time when None), by source."""
    query = select(
        burns.c.source,
        func.coalesce(func.sum(burns.c.amount_ucr), 0),
        func.coalesce(func.sum(burns.c.basis_uusd), 0),
    ).where(burns.c.ref_type.in_(["usage", "usage_refund"]))
    if since is not None:
        query = query.where(burns.c.created_at >= since)
    by_source: dict[str, int] = {}
    basis = 0
    for source, amount, basis_part in fast_connection(session).execute(
        query.group_by(burns.c.source)
    ):
        by_source[source] = int(amount)
        if source == GrantSource.PURCHASED.value:
            basis = int(basis_part)
    return Recognition(by_source_ucr=by_source, purchased_basis_uusd=basis)


@dataclass(frozen=True, slots=True)
class GrantViolation:
    """A wallet whose grants' remainders differ from its posted balance (µcr)."""

    user_id: int
    balance_ucr: int
    grants_ucr: int


def check(session: Session) -> list[GrantViolation]:
    """Every wallet whose grant remainders do not sum to its posted balance, and every grant
    whose burns do not account for what it lost (``amount − remaining = Σ burns``; reported
    with ``balance_ucr`` = −1 and the grant id as ``user_id``)."""
    conn = fast_connection(session)
    remaining = (
        select(grants.c.user_id, func.sum(grants.c.remaining_ucr).label("left"))
        .group_by(grants.c.user_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            accounts.c.owner_id,
            (accounts.c.credits_posted - accounts.c.debits_posted).label("balance"),
            func.coalesce(remaining.c.left, 0).label("left"),
        )
        .select_from(accounts.outerjoin(remaining, remaining.c.user_id == accounts.c.owner_id))
        .where(
            accounts.c.code == AccountCode.USER_WALLET.value,
            (accounts.c.credits_posted - accounts.c.debits_posted)
            != func.coalesce(remaining.c.left, 0),
        )
    )
    found = [GrantViolation(int(r.owner_id), int(r.balance), int(r.left)) for r in rows]
    burned = (
        select(burns.c.grant_id, func.sum(burns.c.amount_ucr).label("burned"))
        .group_by(burns.c.grant_id)
        .subquery()
    )
    lost = conn.execute(
        select(grants.c.id, grants.c.amount_ucr, grants.c.remaining_ucr, burned.c.burned)
        .select_from(grants.outerjoin(burned, burned.c.grant_id == grants.c.id))
        .where(grants.c.amount_ucr - grants.c.remaining_ucr != func.coalesce(burned.c.burned, 0))
    )
    found.extend(
        GrantViolation(int(r.id), -1, int(r.amount_ucr) - int(r.remaining_ucr)) for r in lost
    )
    return found
