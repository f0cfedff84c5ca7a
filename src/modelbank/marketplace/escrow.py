"""Escrow movements of the marketplace (DESIGN §10): every credit of an order moves through
``marketplace_escrow``.

* **pay in**: the buyer's wallet → escrow (code ``trade``), burning the buyer's grants in
  burn-down order (ref ``('marketplace_order', order id)``); the burned cost basis (µUSD) is
  recorded on the order.
* **release**: escrow → the seller's wallet (``trade``; the seller receives a grant carrying
  the matching share of the buyer's cost basis) and escrow → ``platform_fees`` (``fee``).
* **return**: escrow → the buyer's wallet (``refund``), restoring the grants the payment
  burned (last burned first), so expiry and cost basis come back as they were.

Amounts are cumulative per allocation (or per stake order): each posting is keyed by the
total it brings the order to (``market:seller:a<allocation>:<total>``), so a retried step
finds its first transfer and moves nothing twice.

Commission, per DESIGN §10: ``commission = gross × bps / 10,000`` rounded half-even once, on
the cumulative gross, and the seller gets the rest; so per order seller + commission +
returned = paid exactly, whatever the number of partial releases.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.models import transfers_table as transfers
from modelbank.money import div_half_even
from modelbank.users import service as users
from modelbank.wallets import alerts, grants

ORDER_REF = "marketplace_order"
"""``ref_type`` of every escrow transfer and grant burn (``ref_id``: the order)."""
BPS = 10_000


def split(gross_ucr: int, commission_bps: int) -> tuple[int, int]:
    """(seller µcr, commission µcr) of a cumulative gross release: commission =
    ``gross × bps / 10,000`` half-even, the seller the rest (DESIGN §10)."""
    commission = div_half_even(gross_ucr * commission_bps, BPS)
    return gross_ucr - commission, commission


def released_gross(paid_ucr: int, consumed_uusd: int, quantity_uusd: int) -> int:
    """Escrow due to the seller side once ``consumed_uusd`` of ``quantity_uusd`` is consumed:
    ``paid × consumed / quantity`` half-even (all of ``paid`` at full consumption)."""
    if consumed_uusd >= quantity_uusd:
        return paid_ucr
    return div_half_even(paid_ucr * consumed_uusd, quantity_uusd)


def pay_in(
    session: Session,
    order_id: int,
    buyer_id: int,
    amount_ucr: int,
    *,
    now: datetime,
    metadata: dict[str, int | str] | None = None,
) -> tuple[int | None, int]:
    """Move ``amount_ucr`` from the buyer's wallet into escrow for order ``order_id``;
    return (transfer id, burned cost basis µUSD). A zero amount moves nothing (None, 0).
    The caller locked the buyer's wallet. Raises
    :class:`~modelbank.ledger.errors.InsufficientFunds` (nothing written)."""
    if amount_ucr <= 0:
        return None, 0
    buyer = users.get_user(session, buyer_id)
    wallet = ledger.lock_accounts(session, [buyer.wallet_account_id])[buyer.wallet_account_id]
    book = grants.GrantBook.load(session, {buyer_id: wallet}, now=now)
    escrow = ledger.platform_account(session, AccountCode.MARKETPLACE_ESCROW)
    transfer_id = ledger.transfer(
        session,
        ledger.NewTransfer(
            debit_account_id=buyer.wallet_account_id,
            credit_account_id=escrow,
            amount=amount_ucr,
            code=TransferCode.TRADE,
            ref_type=ORDER_REF,
            ref_id=order_id,
            idempotency_key=f"market:escrow:{order_id}",
            metadata=metadata,
        ),
        now=now,
    )
    book.burn(buyer_id, amount_ucr, ORDER_REF, order_id, now=now)
    basis = sum(r[4] for r in book.burn_rows if r[5] == ORDER_REF and r[6] == order_id)
    book.flush(session, now=now)
    alerts.check(session, [buyer_id], now=now)
    return transfer_id, basis


def release(
    session: Session,
    *,
    order_id: int,
    key: str,
    seller_id: int,
    seller_ucr: int,
    commission_ucr: int,
    basis_uusd: int,
    now: datetime,
) -> None:
    """Release escrow of order ``order_id``: ``seller_ucr`` to the seller's wallet (a grant
    with ``basis_uusd`` of cost basis) and ``commission_ucr`` to ``platform_fees``. ``key``
    names this step (``a<allocation>:<cumulative gross>``); a repeat moves nothing."""
    escrow = ledger.platform_account(session, AccountCode.MARKETPLACE_ESCROW)
    if seller_ucr > 0:
        seller = users.get_user(session, seller_id)
        spec = ledger.NewTransfer(
            debit_account_id=escrow,
            credit_account_id=seller.wallet_account_id,
            amount=seller_ucr,
            code=TransferCode.TRADE,
            ref_type=ORDER_REF,
            ref_id=order_id,
            idempotency_key=f"market:seller:{key}",
        )
        existing = transfer_id_by_key(session, f"market:seller:{key}")
        transfer_id = ledger.transfer(session, spec, now=now)
        if existing is None:
            grants.receive(
                session,
                seller_id,
                seller_ucr,
                transfer_id=transfer_id,
                cost_basis_uusd=basis_uusd,
                now=now,
                source=grants.GrantSource.PURCHASED if basis_uusd > 0 else grants.GrantSource.BONUS,
            )
    if commission_ucr > 0:
        ledger.transfer(
            session,
            ledger.NewTransfer(
                debit_account_id=escrow,
                credit_account_id=ledger.platform_account(session, AccountCode.PLATFORM_FEES),
                amount=commission_ucr,
                code=TransferCode.FEE,
                ref_type=ORDER_REF,
                ref_id=order_id,
                idempotency_key=f"market:fee:{key}",
            ),
            now=now,
        )


def give_back(
    session: Session,
    *,
    order_id: int,
    key: str,
    buyer_id: int,
    amount_ucr: int,
    now: datetime,
) -> None:
    """Return ``amount_ucr`` of order ``order_id``'s escrow to the buyer, restoring the grants
    its payment burned (last burned first). ``key`` names this step; a repeat moves
    nothing."""
    if amount_ucr <= 0:
        return
    idem = f"market:return:{key}"
    if transfer_id_by_key(session, idem) is not None:
        return
    buyer = users.get_user(session, buyer_id)
    ledger.transfer(
        session,
        ledger.NewTransfer(
            debit_account_id=ledger.platform_account(session, AccountCode.MARKETPLACE_ESCROW),
            credit_account_id=buyer.wallet_account_id,
            amount=amount_ucr,
            code=TransferCode.REFUND,
            ref_type=ORDER_REF,
            ref_id=order_id,
            idempotency_key=idem,
        ),
        now=now,
    )
    burned = grants.burns_for(session, ORDER_REF, [order_id]).get(order_id, [])
    grants.restore(
        session, burned, amount_ucr, ref_type=f"{ORDER_REF}_refund", ref_id=order_id, now=now
    )
    alerts.check(session, [buyer_id], now=now)


def transfer_id_by_key(session: Session, key: str) -> int | None:
    """The id of the transfer posted with idempotency key ``key``, or None."""
    found = (
        session.connection()
        .execute(select(transfers.c.id).where(transfers.c.idempotency_key == key))
        .scalar()
    )
    return None if found is None else int(found)


def basis_share(basis_uusd: int, paid_ucr: int, before_ucr: int, after_ucr: int) -> int:
    """Cost basis carried by the seller's credits between cumulative ``before`` and
    ``after`` µcr of an order that burned ``basis_uusd`` for ``paid_ucr``."""
    return grants.basis_of(after_ucr, paid_ucr, basis_uusd) - grants.basis_of(
        before_ucr, paid_ucr, basis_uusd
    )
