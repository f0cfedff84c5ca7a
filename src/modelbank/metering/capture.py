"""Capturing a wallet hold (DESIGN §3 two-phase transfers, exposed over HTTP): a usage event
is charged through the normal pipeline for exactly the captured amount (grants burned,
creator earnings paid, usage row written); the hold is *posted* for that amount and the rest
released, all in one transaction.

Placing, voiding, reading and expiring holds is the wallets' (:mod:`modelbank.wallets.holds`);
capturing charges usage, so it lives here, in metering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.ledger import holds as ledger_holds
from modelbank.ledger.holds import Hold
from modelbank.metering import service as metering
from modelbank.wallets.holds import HoldInfo, get_hold


def capture(
    session: Session,
    hold_id: int,
    amount_ucr: int,
    *,
    model: int | str | None = None,
    usage_type: str = "other",
    input_tokens: int = 0,
    output_tokens: int = 0,
    units: int = 0,
    metadata: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[HoldInfo, metering.ChargeResult]:
    """Charge ``amount_ucr`` µcr (≤ held) of the hold as a usage event of its model (or
    ``model``) and release the rest, in the caller's transaction. The usage event's
    idempotency key is ``hold:<id>``; the counts given are recorded and drive per-token
    creator earnings, the charge is exactly ``amount_ucr``. A hold reserved on a limited API
    key settles there: its reservation goes and the charge counts in the key's period.

    Raises :class:`~modelbank.wallets.errors.HoldNotFound`,
    :class:`~modelbank.ledger.errors.HoldNotPending` (already captured or voided: a second
    capture), :class:`~modelbank.ledger.errors.HoldExpired`,
    :class:`~modelbank.ledger.errors.HoldAmountExceeded`, :class:`InvalidInput` (negative
    amount, no model), and what charging raises
    (:class:`~modelbank.catalog.errors.AccessRequired`, …)."""
    now = now or utcnow()
    if amount_ucr < 0:
        raise InvalidInput("amount_ucr must be ≥ 0")
    wallet_hold = get_hold(session, hold_id)
    problem = ledger_holds.posting_problem(_as_ledger_hold(wallet_hold), amount_ucr, now)
    if problem is not None:
        raise problem
    target = model if model is not None else wallet_hold.model_id
    if target is None:
        raise InvalidInput("this hold names no model: give the model to charge")
    result = metering.charge(
        session,
        metering.UsageEvent(
            idempotency_key=f"hold:{hold_id}",
            user_id=wallet_hold.user_id,
            model=target,
            usage_type=usage_type,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            units=units,
            metadata=metadata,
            charge_ucr=amount_ucr,
            hold_id=hold_id,
            limited_key_id=wallet_hold.api_key_id,
        ),
        now=now,
    )
    if result.status != "charged":  # a replay of the capture: the hold as stored
        return get_hold(session, hold_id), result
    # The charge's pipeline posted the hold (or voided it for 0) and checked the alerts.
    return replace(
        wallet_hold,
        status="posted" if amount_ucr > 0 else "voided",
        captured_ucr=amount_ucr,
        usage_id=result.usage_id,
        reason=None if amount_ucr > 0 else "captured_zero",
        resolved_at=now,
    ), result


def _as_ledger_hold(info: HoldInfo) -> Hold:
    """The ledger's view of a wallet hold, for :func:`~modelbank.ledger.holds.posting_problem`."""
    return Hold(
        id=info.id,
        debit_account_id=0,
        credit_account_id=0,
        amount=info.amount_ucr,
        code="",
        expires_at=info.expires_at,
        status=info.status,
        posted_amount=info.captured_ucr,
    )
