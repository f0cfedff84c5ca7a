"""Buying access to a premium model with credits (DESIGN §4, issue "HTTP API").

Buying moves ``access_price_ucr`` from the user's wallet to platform revenue in one transfer
(burning the user's grants) and records the access in the same transaction; buying again is
a no-op that returns the first purchase. Who may use which model is checked in
:mod:`modelbank.catalog.access`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from modelbank.catalog.errors import ModelNotFound, NotPremium
from modelbank.catalog.models import model_access_table as access
from modelbank.catalog.service import get_model
from modelbank.db.base import utcnow
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.users import service as users
from modelbank.wallets import alerts, grants


@dataclass(frozen=True, slots=True)
class Access:
    """A user's access to a model: what it cost (µcr), the paying transfer, when; ``new`` is
    False when the access already existed (nothing was charged this time)."""

    user_id: int
    model_id: int
    price_ucr: int
    transfer_id: int | None
    created_at: datetime
    new: bool


def purchase_access(session: Session, user_id: int, model_id: int) -> Access:
    """Buy access to a premium model for ``user_id`` at its access price.

    Idempotent per (user, model): a second call returns the first purchase with
    ``new=False``. The creator of a model has access without buying. Raises
    :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.catalog.errors.ModelNotFound` (unknown or inactive),
    :class:`NotPremium`, :class:`~modelbank.ledger.errors.InsufficientFunds`.
    """
    user = users.get_user(session, user_id)
    model = get_model(session, model_id)
    if not model.is_active:
        raise ModelNotFound(f"no active model {model_id}", model=model_id)
    if not model.is_premium:
        raise NotPremium(f"model {model.slug!r} is free to use", model_id=model_id)
    locked = ledger.lock_accounts(session, [user.wallet_account_id])
    conn = session.connection()
    row = conn.execute(
        select(access).where(access.c.user_id == user_id, access.c.model_id == model_id)
    ).first()
    if row is not None:
        return Access(
            user_id, model_id, int(row.price_ucr), row.transfer_id, row.created_at, new=False
        )
    now = utcnow()
    transfer_id: int | None = None
    if model.creator_id != user_id and model.access_price_ucr > 0:
        # Expired credits are swept before the balance check; the price burns grants.
        book = grants.GrantBook.load(session, {user_id: locked[user.wallet_account_id]}, now=now)
        transfer_id = ledger.transfer(
            session,
            ledger.NewTransfer(
                debit_account_id=user.wallet_account_id,
                credit_account_id=ledger.platform_account(session, AccountCode.PLATFORM_REVENUE),
                amount=model.access_price_ucr,
                code=TransferCode.ACCESS_PURCHASE,
                ref_type="model",
                ref_id=model_id,
                idempotency_key=f"access:{user_id}:{model_id}",
            ),
            now=now,
        )
        book.burn(user_id, model.access_price_ucr, "access", model_id, now=now)
        book.flush(session, now=now)
        alerts.check(session, [user_id], now=now)
    price = model.access_price_ucr if transfer_id is not None else 0
    conn.execute(
        insert(access).values(
            user_id=user_id,
            model_id=model_id,
            price_ucr=price,
            transfer_id=transfer_id,
            created_at=now,
        )
    )
    return Access(user_id, model_id, price, transfer_id, now, new=True)
