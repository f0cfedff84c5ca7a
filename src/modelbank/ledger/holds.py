"""Hold states and their checks (DESIGN §3 two-phase transfers; §13 "hold states and their
checks"): the one place that says whether a pending transfer may be posted for an amount.

A hold is ``pending`` until it is ``posted`` (for an amount ≤ the reserved one, the rest
released) or ``voided`` (all released, also when it expires). Every path that posts a hold
(:func:`~modelbank.ledger.service.post_hold`, a charge capturing a hold in
:mod:`modelbank.metering`) asks :func:`posting_problem` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modelbank.errors import DomainError
from modelbank.ledger.errors import HoldAmountExceeded, HoldExpired, HoldNotPending


@dataclass(frozen=True, slots=True)
class Hold:
    """A pending transfer and what became of it. ``status``: pending, posted or voided."""

    id: int
    debit_account_id: int
    credit_account_id: int
    amount: int
    code: str
    expires_at: datetime | None
    status: str
    posted_amount: int
    ref_type: str | None = None
    ref_id: int | None = None
    created_at: datetime | None = None
    resolved_at: datetime | None = None
    reason: str | None = None
    """Why it was voided (``voided``, ``expired``, …)."""


def posting_problem(hold: Hold, amount_ucr: int, now: datetime) -> DomainError | None:
    """Why ``hold`` cannot be posted for ``amount_ucr`` µcr at ``now``, or None.

    In this order: :class:`HoldNotPending` (already posted or voided),
    :class:`HoldExpired` (its timeout has passed, even if the expiry job has not voided it
    yet), :class:`HoldAmountExceeded` (more than it reserved). The errors are returned, not
    raised, so that a batch can reject one event and go on."""
    if hold.status != "pending":
        return HoldNotPending(f"hold {hold.id} is already {hold.status}", status=hold.status)
    if hold.expires_at is not None and hold.expires_at <= now:
        return HoldExpired(f"hold {hold.id} expired at {hold.expires_at.isoformat()}")
    if amount_ucr > hold.amount:
        return HoldAmountExceeded(
            f"cannot post {amount_ucr} µcr of a {hold.amount} µcr hold",
            held_ucr=hold.amount,
            amount_ucr=amount_ucr,
        )
    return None


def void_problem(hold: Hold) -> DomainError | None:
    """Why ``hold`` cannot be voided: :class:`HoldNotPending`, or None."""
    if hold.status != "pending":
        return HoldNotPending(f"hold {hold.id} is already {hold.status}", status=hold.status)
    return None
