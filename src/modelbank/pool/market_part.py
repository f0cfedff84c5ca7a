"""Moving quota from a resource's pool part to its market part (DESIGN §10: "moving quota from
the pool part to the market part reverses its deposit credit, and only while the wallet still
holds it"), so that the depositor can sell it on the marketplace and no µUSD of quota is both
credited at deposit and sold.

Moving ``x`` µUSD (at most the pool part not yet consumed) reverses
``credit = (deposit − moved) × x / pool part`` µcr (half-even, once) of the deposit transfer
(idempotency key ``pool:move:<resource>:<market part after>``), from the depositor's wallet,
burning the deposit grant first and then the other grants in burn-down order. The wallet
must hold all of it (available balance): a move never leaves a debt. The platform's fee is
not returned (it paid for taking the quota into the pool, which happened). Afterwards
``deposit − moved`` is the credit of the smaller pool part, and the clawback of a later
withdrawal is computed on it (:mod:`modelbank.pool.lifecycle`). A platform resource moves
quota without any credit. An active resource whose pool part is then all consumed becomes
``depleted`` (its market part still serves the marketplace's allocations).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.ledger import service as ledger
from modelbank.ledger.models import transfers_table as transfers
from modelbank.money import div_half_even
from modelbank.pool.deposits import deposit_key
from modelbank.pool.errors import DepositCreditSpent, InvalidResource, ResourceState
from modelbank.pool.models import resources_table as resources
from modelbank.pool.resources import ResourceInfo, get_resource
from modelbank.users import service as users
from modelbank.wallets import alerts, grants
from modelbank.wallets.models import grants_table

MOVE_KEY_PREFIX = "pool:move:"
"""Idempotency-key prefix of the reversals a move posts (the pool invariants tell them from
clawbacks by it)."""
MOVABLE = ("active", "depleted")


def move_to_market(
    session: Session,
    resource_id: int,
    amount_uusd: int,
    *,
    owner_id: int | None,
    now: datetime | None = None,
) -> ResourceInfo:
    """Move ``amount_uusd`` µUSD of the resource's unconsumed pool part to its market part
    (module docstring); return the resource. ``owner_id``: the caller acting as that user
    must own it (None: an admin). Raises :class:`~modelbank.pool.errors.ResourceNotFound`,
    :class:`InvalidResource` (amount not in 1…unconsumed pool part),
    :class:`ResourceState` (not active or depleted), :class:`DepositCreditSpent` (the
    wallet no longer holds the credit to reverse); nothing is written then."""
    now = now or utcnow()
    owner = get_resource(session, resource_id, owner_id=owner_id, admin=owner_id is None).owner_id
    wallet = None
    if owner is not None:  # lock order: the wallet, then the resource (as captures do)
        wallet_id = users.get_user(session, owner).wallet_account_id
        wallet = ledger.lock_accounts(session, [wallet_id])[wallet_id]
    info = get_resource(session, resource_id, lock=True)
    if info.status not in MOVABLE:
        raise ResourceState(
            f"resource {resource_id} is {info.status}: only an active resource's quota moves",
            resource_id=resource_id,
            status=info.status,
        )
    left = info.pool_quota_uusd - info.consumed_uusd
    if (
        not isinstance(amount_uusd, int)
        or isinstance(amount_uusd, bool)
        or not (0 < amount_uusd <= left)
    ):
        raise InvalidResource(
            f"amount_uusd must be 1…{max(left, 0)} (the pool part not yet consumed)",
            amount_uusd=amount_uusd,
            unconsumed_uusd=max(left, 0),
        )
    credit = (
        0
        if info.pool_quota_uusd <= 0
        else div_half_even(info.pool_credit_ucr * amount_uusd, info.pool_quota_uusd)
    )
    market = info.market_quota_uusd + amount_uusd
    if credit > 0 and owner is not None and wallet is not None:
        if wallet.available < credit:
            raise DepositCreditSpent(
                f"moving {amount_uusd} µUSD reverses {credit} µcr of deposit credit; the"
                f" wallet has {wallet.available} µcr available",
                resource_id=resource_id,
                credit_ucr=credit,
                available_ucr=wallet.available,
            )
        _reverse(session, info, owner, wallet, credit, f"{MOVE_KEY_PREFIX}{info.id}:{market}", now)
    consumed = info.consumed_uusd
    session.connection().execute(
        update(resources)
        .where(resources.c.id == resource_id)
        .values(
            market_quota_uusd=market,
            moved_credit_ucr=info.moved_credit_ucr + credit,
            status="depleted"
            if info.status == "active" and consumed >= info.quota_uusd - market
            else info.status,
            updated_at=now,
        )
    )
    return get_resource(session, resource_id)


def _reverse(
    session: Session,
    info: ResourceInfo,
    owner: int,
    wallet: ledger.AccountBalance,
    credit: int,
    key: str,
    now: datetime,
) -> None:
    """Reverse ``credit`` of the deposit transfer, burning the deposit grant first."""
    conn = session.connection()
    original = conn.execute(
        select(transfers.c.id).where(transfers.c.idempotency_key == deposit_key(info.id))
    ).scalar()
    assert original is not None, f"resource {info.id} was credited without a deposit transfer"
    grant_id = conn.execute(
        select(grants_table.c.id).where(grants_table.c.transfer_id == original)
    ).scalar_one()
    book = grants.GrantBook.load(session, {owner: wallet}, now=now)  # sweeps expired first
    if wallet.available < credit:  # the sweep took expired credit away
        raise DepositCreditSpent(
            f"the wallet has {wallet.available} µcr available, {credit} µcr to reverse",
            resource_id=info.id,
            credit_ucr=credit,
            available_ucr=wallet.available,
        )
    from_grant = min(credit, book.remaining(owner, int(grant_id)))
    if from_grant > 0:
        book.take(owner, int(grant_id), from_grant, "pool_move", info.id)
    if credit > from_grant:
        book.burn(owner, credit - from_grant, "pool_move", info.id, now=now)
    book.flush(session, now=now)
    ledger.reverse(
        session,
        int(original),
        amount=credit,
        idempotency_key=key,
        now=now,
        metadata={"moved_to_market": True},
    )
    alerts.check(session, [owner], now=now)
