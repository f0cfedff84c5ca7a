"""A resource after activation (DESIGN §9): provider spend consumes its quota
(:func:`book_consumption`), and it ends by withdrawal (:func:`withdraw`) or permanent failure
(:func:`fail`), both of which claw back the deposit credit whose quota was never used.

Clawback: ``unconsumed = (deposit − moved) × (pool part − consumed, floored at 0) / pool
part``, rounded once, half-even (:func:`~modelbank.pool.resources.unconsumed_credit`;
``moved``: credit already reversed when quota moved to the market part,
:mod:`~modelbank.pool.market_part`). It is reversed from the depositor's wallet (a reversing
transfer of the deposit credit, wallet → ``pool_deposits``) as far as the wallet's available
balance allows, burning the deposit grant first and then the other grants in burn-down order;
the rest becomes a :class:`~modelbank.pool.models.PoolDebt` that
:func:`~modelbank.pool.debts.settle_debts` collects from the depositor's later credits.
``clawed_back_ucr`` records the whole amount (wallet part + debt). The platform's fee is not
returned: it paid for taking the quota into the pool, which happened. After the end the
resource's accounting is closed, so that ``deposit − moved = consumed share + clawed back``
stays exact: spend booked later (requests in flight at the end) is not added to
``consumed_uusd``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import case, insert, select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.ledger import service as ledger
from modelbank.ledger.models import transfers_table as transfers
from modelbank.pool.deposits import MAX_REASON_LENGTH, deposit_key
from modelbank.pool.errors import ResourceState
from modelbank.pool.models import pool_debts_table as debts
from modelbank.pool.models import resources_table as resources
from modelbank.pool.resources import ResourceInfo, get_resource, unconsumed_credit
from modelbank.users import service as users
from modelbank.wallets import alerts, grants
from modelbank.wallets.models import grants_table

ENDED = ("withdrawn", "failed")
"""Statuses after which a resource's accounting is closed."""
END_HOOKS: list[Callable[[Session, int, str, datetime], object]] = []
"""Called as ``hook(session, resource_id, status, now)`` when a live resource is about to end
(``withdrawn`` or ``failed``), in the same transaction, before the depositor's wallet and the
resource are locked (so the hook's locks come first, in the marketplace's order). Upper layers
register here (the marketplace returns its allocations' escrow); the pool imports none."""
BOOKABLE = ("active", "depleted", "suspended")
"""Statuses in which provider spend is booked against the quota (a suspended resource may
still finish requests in flight)."""


def book_consumption(
    session: Session, resource_id: int, cost_uusd: int, *, now: datetime | None = None
) -> None:
    """Add ``cost_uusd`` µUSD of provider spend to the resource's ``consumed_uusd``, in the
    caller's transaction (the gateway's capture). One ``UPDATE … SET consumed_uusd =
    consumed_uusd + :cost`` under the row's lock, so concurrent captures never lose an
    increment; an ``active`` resource becomes ``depleted`` once consumption reaches its pool
    part (quota − market part). Overruns are recorded as they happened. Spend on a
    resource that is pending, withdrawn or failed is not booked (module docstring).
    Raises :class:`~modelbank.errors.InvalidInput` for a negative or non-integer cost."""
    if not isinstance(cost_uusd, int) or isinstance(cost_uusd, bool) or cost_uusd < 0:
        raise InvalidInput(f"cost_uusd must be a non-negative integer, got {cost_uusd!r}")
    if cost_uusd == 0:
        return
    consumed = resources.c.consumed_uusd + cost_uusd
    session.connection().execute(
        update(resources)
        .where(resources.c.id == resource_id, resources.c.status.in_(BOOKABLE))
        .values(
            consumed_uusd=consumed,
            status=case(
                (
                    (resources.c.status == "active")
                    & (consumed >= resources.c.quota_uusd - resources.c.market_quota_uusd),
                    "depleted",
                ),
                else_=resources.c.status,
            ),
            updated_at=now or utcnow(),
        )
    )


def withdraw(session: Session, resource_id: int, *, now: datetime | None = None) -> ResourceInfo:
    """End a resource at its owner's (or an admin's) request: status ``withdrawn``, the
    unconsumed deposit credit clawed back (module docstring). Idempotent: a withdrawn
    resource is returned as it is. The caller checks who may withdraw. Raises
    :class:`~modelbank.pool.errors.ResourceNotFound`, :class:`ResourceState` (failed)."""
    return _end(session, resource_id, "withdrawn", None, now or utcnow())


def fail(
    session: Session, resource_id: int, reason: str, *, now: datetime | None = None
) -> ResourceInfo:
    """End a resource whose key failed permanently (refused by the provider at the probe,
    or auth errors past the breaker): status ``failed`` with ``reason`` (≤ 200 characters,
    no key in it), the unconsumed deposit credit clawed back. Idempotent on a failed
    resource; a withdrawn one is returned unchanged (it ended already). Raises
    :class:`~modelbank.pool.errors.ResourceNotFound`."""
    return _end(session, resource_id, "failed", reason, now or utcnow())


def _end(
    session: Session, resource_id: int, status: str, reason: str | None, now: datetime
) -> ResourceInfo:
    current = get_resource(session, resource_id)
    owner = current.owner_id
    if current.status not in ENDED:
        for hook in END_HOOKS:
            hook(session, resource_id, status, now)
    wallet = None
    if owner is not None:  # lock order: the wallet, then the resource (as captures do)
        wallet_id = users.get_user(session, owner).wallet_account_id
        wallet = ledger.lock_accounts(session, [wallet_id])[wallet_id]
    info = get_resource(session, resource_id, lock=True)
    if info.status == status or (status == "failed" and info.status == "withdrawn"):
        return info
    if info.status in ENDED:
        raise ResourceState(
            f"resource {resource_id} is {info.status} already",
            resource_id=resource_id,
            status=info.status,
        )
    clawed = 0
    if owner is not None and wallet is not None and info.pool_credit_ucr > 0:
        clawed = claw_back(session, info, owner, wallet, now=now)
    session.connection().execute(
        update(resources)
        .where(resources.c.id == resource_id)
        .values(
            status=status,
            status_reason=None if reason is None else reason[:MAX_REASON_LENGTH],
            clawed_back_ucr=clawed,
            ended_at=now,
            updated_at=now,
        )
    )
    return get_resource(session, resource_id)


def deposit_transfer_id(session: Session, resource_id: int) -> int | None:
    """The id of the transfer that credited the resource's deposit, or None."""
    found = (
        session.connection()
        .execute(
            select(transfers.c.id).where(transfers.c.idempotency_key == deposit_key(resource_id))
        )
        .scalar()
    )
    return None if found is None else int(found)


def claw_back(
    session: Session,
    info: ResourceInfo,
    owner: int,
    wallet: ledger.AccountBalance,
    *,
    now: datetime,
) -> int:
    """Reverse the unconsumed deposit credit of ``info`` from ``owner``'s wallet (locked by
    the caller, ``wallet`` read under that lock) as far as its available balance allows,
    and record the rest as a debt; return the whole amount (µcr). Module docstring."""
    amount = unconsumed_credit(info.pool_credit_ucr, info.pool_quota_uusd, info.consumed_uusd)
    if amount <= 0:
        return 0
    original = deposit_transfer_id(session, info.id)
    assert original is not None, f"resource {info.id} was credited without a deposit transfer"
    grant_id = (
        session.connection()
        .execute(select(grants_table.c.id).where(grants_table.c.transfer_id == original))
        .scalar_one()
    )
    book = grants.GrantBook.load(session, {owner: wallet}, now=now)  # sweeps expired first
    taken = min(amount, max(wallet.available, 0))
    from_grant = min(taken, book.remaining(owner, int(grant_id)))
    if from_grant > 0:
        book.take(owner, int(grant_id), from_grant, "pool_clawback", info.id)
    if taken > from_grant:
        book.burn(owner, taken - from_grant, "pool_clawback", info.id, now=now)
    book.flush(session, now=now)
    if taken > 0:
        ledger.reverse(
            session,
            original,
            amount=taken,
            idempotency_key=f"pool:clawback:{info.id}",
            now=now,
            metadata={"clawback_ucr": amount},
        )
        alerts.check(session, [owner], now=now)
    if amount > taken:
        session.connection().execute(
            insert(debts).values(
                user_id=owner,
                resource_id=info.id,
                amount_ucr=amount - taken,
                remaining_ucr=amount - taken,
                created_at=now,
            )
        )
    return amount
