"""Access to premium models, bought with credits (DESIGN §4, issue "HTTP API").

A premium model may be charged for only when the user bought access or created it. Buying
moves ``access_price_ucr`` from the user's wallet to platform revenue in one transfer and
records the access in the same transaction; buying again is a no-op that returns the first
purchase.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from modelbank.catalog.errors import AccessRequired, ModelNotFound, NotPremium
from modelbank.catalog.models import model_access_table as access
from modelbank.catalog.service import ModelInfo, get_model
from modelbank.db.base import utcnow
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.users import service as users
from modelbank.wallets import alerts, grants

_ACCESS_OF_USERS = select(access.c.user_id, access.c.model_id).where(
    access.c.user_id.in_(bindparam("users", expanding=True)),
    access.c.model_id.in_(bindparam("models", expanding=True)),
)


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


def accessible(session: Session, user_id: int, model_ids: Iterable[int]) -> set[int]:
    """The models among ``model_ids`` to which ``user_id`` bought access."""
    ids = list(set(model_ids))
    if not ids:
        return set()
    rows = session.connection().execute(_ACCESS_OF_USERS, {"users": [user_id], "models": ids})
    return {int(r.model_id) for r in rows}


def missing_access(session: Session, uses: Iterable[tuple[int, ModelInfo]]) -> set[tuple[int, int]]:
    """``(user_id, model_id)`` pairs among ``uses`` that need access and lack it: premium
    models used by someone other than their creator without a purchase. One query."""
    wanted = {
        (user_id, model.id)
        for user_id, model in uses
        if model.is_premium and model.creator_id != user_id
    }
    if not wanted:
        return set()
    rows = session.connection().execute(
        _ACCESS_OF_USERS,
        {"users": sorted({u for u, _ in wanted}), "models": sorted({m for _, m in wanted})},
    )
    have = {(int(r.user_id), int(r.model_id)) for r in rows}
    return wanted - have


def require_access(session: Session, user_id: int, model: ModelInfo) -> None:
    """Raise :class:`AccessRequired` unless ``user_id`` may use ``model``."""
    if missing_access(session, [(user_id, model)]):
        raise AccessRequired(
            f"model {model.slug!r} is premium: buy access first",
            model_id=model.id,
            access_price_ucr=model.access_price_ucr,
        )
