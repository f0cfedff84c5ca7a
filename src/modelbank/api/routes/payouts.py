"""Payouts over HTTP (DESIGN §7): creators request and cancel, admins complete or fail, and
set the minimum. Thin: every rule is in :mod:`modelbank.earnings.payouts`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelbank.api import payout_schemas as ps
from modelbank.api.deps import DB, Caller, IdemKey, PathId, scoped
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.auth.service import Principal
from modelbank.earnings import payouts
from modelbank.earnings.errors import PayoutNotFound
from modelbank.money import format_credits

router = APIRouter(
    prefix="/api/v1", tags=["payouts"], responses=problem_responses(*COMMON_PROBLEMS)
)

Limit = Annotated[int, Query(ge=1, le=payouts.MAX_PAGE, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the last page")]


def _visible(session: Session, caller: Principal, payout_id: int) -> payouts.PayoutInfo:
    found = payouts.get_payout(session, payout_id)
    if not caller.can_act_for(found.user_id):
        raise PayoutNotFound(f"no payout {payout_id}", payout_id=payout_id)
    return found


def _out(info: payouts.PayoutInfo) -> dict[str, Any]:
    return ps.payout_out(info).model_dump(mode="json")


@router.post("/users/{user_id}/payouts", status_code=201, response_model=ps.PayoutOut)
def request_payout(
    user_id: PathId, body: ps.PayoutIn, key: IdemKey, caller: Caller, db: DB
) -> JSONResponse:
    """Withdraw ``amount_ucr`` of the user's earnings (the user, a service key or an admin):
    at least ``minimum_ucr``, at most ``available_ucr`` (earnings − pending payouts − what is
    owed back from refunded usage; both in ``GET …/payouts``). The amount is held at once;
    the payout stays ``pending`` until an admin completes or fails it. 422
    ``payout_below_minimum`` / ``payout_exceeds_available`` change nothing; 403 for a key
    with a spend limit."""
    scoped(caller, user_id)
    caller.require_wallet_spender()

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        info = payouts.request(
            session, user_id, body.amount_ucr, credits_per_usd=db.settings.credits_per_usd
        )
        return 201, _out(info)

    return db.idempotent(
        caller, key, f"/users/{user_id}/payouts", body.model_dump(mode="json"), run
    )


@router.get("/users/{user_id}/payouts", response_model=ps.UserPayoutsOut)
def user_payouts(
    user_id: PathId,
    caller: Caller,
    db: DB,
    status: ps.Status | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ps.UserPayoutsOut:
    """The user's payouts, oldest first, with their statuses, and what the user may withdraw
    now (``available_ucr``, ``pending_ucr``, ``owed_ucr``, ``minimum_ucr``)."""
    scoped(caller, user_id)
    with db.read() as session:
        page = payouts.list_payouts(
            session, user_id=user_id, status=status, after=ps.decode_cursor(cursor), limit=limit
        )
        summary = payouts.summary(session, user_id)
    return ps.user_payouts_out(page, summary)


@router.get("/payouts/{payout_id}", response_model=ps.PayoutOut)
def get_payout(payout_id: PathId, caller: Caller, db: DB) -> ps.PayoutOut:
    """One payout (its creator, a service key or an admin)."""
    with db.read() as session:
        return ps.payout_out(_visible(session, caller, payout_id))


@router.post("/payouts/{payout_id}/cancel", response_model=ps.PayoutOut)
def cancel_payout(payout_id: PathId, key: IdemKey, caller: Caller, db: DB) -> JSONResponse:
    """Cancel a pending payout (its creator, a service key or an admin): the held credits
    are available again. 409 ``payout_state_conflict`` once it is no longer pending."""

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        _visible(session, caller, payout_id)
        return 200, _out(payouts.cancel(session, payout_id, user_id=caller.user_id))

    return db.idempotent(caller, key, f"/payouts/{payout_id}/cancel", {}, run)


@router.get("/admin/payouts", response_model=ps.PayoutPageOut)
def admin_payouts(
    caller: Caller,
    db: DB,
    status: ps.Status | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ps.PayoutPageOut:
    """Every payout (admin): of ``status``, oldest first; without a status, the pending
    ones first (the queue to work through), then the rest."""
    caller.require_admin()
    with db.read() as session:
        page = payouts.list_payouts(
            session,
            status=status,
            after=ps.decode_cursor(cursor),
            limit=limit,
            pending_first=status is None,
        )
    return ps.page_out(page)


@router.post("/admin/payouts/{payout_id}/complete", response_model=ps.PayoutOut)
def complete_payout(
    payout_id: PathId, body: ps.CompleteIn, key: IdemKey, caller: Caller, db: DB
) -> JSONResponse:
    """Mark a pending payout paid (admin), after paying it outside modelbank: the held
    credits leave through ``world_payouts`` and the µUSD amount is recorded at the payout
    rate (the server's credits per USD). 409 ``payout_state_conflict`` unless pending;
    409 ``payout_blocked_by_debt`` when usage refunded since the request left a debt the
    creator's other earnings do not cover."""
    caller.require_admin()

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        info = payouts.complete(
            session,
            payout_id,
            body.external_reference,
            credits_per_usd=db.settings.credits_per_usd,
        )
        return 200, _out(info)

    return db.idempotent(
        caller,
        key,
        f"/admin/payouts/{payout_id}/complete",
        body.model_dump(mode="json"),
        run,
    )


@router.post("/admin/payouts/{payout_id}/fail", response_model=ps.PayoutOut)
def fail_payout(
    payout_id: PathId, body: ps.FailIn, key: IdemKey, caller: Caller, db: DB
) -> JSONResponse:
    """Mark a pending payout failed with a reason (admin): its hold is voided and the credits
    are back in the creator's earnings. 409 ``payout_state_conflict`` unless pending."""
    caller.require_admin()

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        return 200, _out(payouts.fail(session, payout_id, body.reason))

    return db.idempotent(
        caller, key, f"/admin/payouts/{payout_id}/fail", body.model_dump(mode="json"), run
    )


@router.put("/admin/payout-minimum", response_model=ps.MinimumOut)
def set_payout_minimum(body: ps.MinimumIn, caller: Caller, db: DB) -> ps.MinimumOut:
    """Set the smallest payout (admin, µcr; default 100 credits). Pending payouts keep
    their amounts."""
    caller.require_admin()
    with db.write() as session:
        value = payouts.set_minimum(session, body.minimum_ucr)
    return ps.MinimumOut(minimum_ucr=value, minimum=format_credits(value))
