"""Users, their keys, grants, wallets, ledger history, earnings and analytics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelbank.analytics import service as analytics
from modelbank.api import present
from modelbank.api import schemas as s
from modelbank.api.deps import DB, Caller, IdemKey, PathId, decode_cursor, encode_cursor, scoped
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.auth import service as auth
from modelbank.ledger.codes import TransferCode
from modelbank.ledger.queries import list_transfers
from modelbank.ledger.service import get_balance
from modelbank.money import format_credits
from modelbank.users import service as users
from modelbank.wallets import referrals
from modelbank.wallets import service as wallets

router = APIRouter(
    prefix="/api/v1",
    tags=["users"],
    responses=problem_responses(*COMMON_PROBLEMS),
)

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the last page")]


def _user(info: users.UserInfo) -> s.UserOut:
    assert info.created_at is not None
    return s.UserOut(
        id=info.id,
        external_id=info.external_id,
        display_name=info.display_name,
        created_at=info.created_at,
    )


@router.post("/users", status_code=201, response_model=s.UserOut)
def create_user(body: s.UserIn, caller: Caller, db: DB) -> s.UserOut:
    """Create a user (admin). 409 when ``external_id`` is taken. With ``referral_code``, the
    user is referred (404 for an unknown code: nothing is created)."""
    caller.require_admin()
    with db.write() as session:
        made = users.create_user(session, body.external_id, body.display_name)
        if body.referral_code is not None:
            referrals.apply_referral(session, made.id, body.referral_code)
        return _user(made)


@router.get("/users", response_model=s.UserPage)
def list_users(caller: Caller, db: DB, limit: Limit = 50, cursor: Cursor = None) -> s.UserPage:
    """Every user, in id order (admin)."""
    caller.require_admin()
    with db.read() as session:
        found = users.list_users(session, after_id=decode_cursor(cursor) or 0, limit=limit)
    return s.UserPage(
        items=[_user(u) for u in found],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


@router.get("/users/{user_id}", response_model=s.UserOut)
def get_user(user_id: PathId, caller: Caller, db: DB) -> s.UserOut:
    """One user (admin, service, or that user)."""
    scoped(caller, user_id)
    with db.read() as session:
        return _user(users.get_user(session, user_id))


@router.post(
    "/users/{user_id}/keys",
    status_code=201,
    response_model=s.KeyOut,
)
def create_user_key(
    user_id: PathId, caller: Caller, db: DB, body: s.KeyIn | None = None
) -> s.KeyOut:
    """A new API key for the user (admin, service, or that user with a key without a spend
    limit), optionally with a spend limit: ``limit_ucr`` µcr per ``limit_period``. Every
    charge and hold made with a limited key counts against it (402 ``key_limit_reached``
    past it). The secret is in this response only."""
    scoped(caller, user_id)
    caller.require_key_manager()
    body = body or s.KeyIn()
    with db.write() as session:
        key = auth.create_key(
            session,
            auth.Role.USER,
            user_id=user_id,
            name=body.name,
            limit_ucr=body.limit_ucr,
            limit_period=body.limit_period,
        )
    return present.key(key)


@router.get("/users/{user_id}/keys", response_model=s.KeyList)
def list_user_keys(
    user_id: PathId, caller: Caller, db: DB, include_revoked: bool = False
) -> s.KeyList:
    """The user's keys, oldest first, never their secrets: each key's spend limit with what
    was spent in the current period, what pending holds reserve, what is left and when the
    period resets."""
    scoped(caller, user_id)
    with db.read() as session:
        found = auth.list_user_keys(session, user_id, include_revoked=include_revoked)
    return s.KeyList(items=[present.key_info(k) for k in found])


@router.patch("/users/{user_id}/keys/{key_id}", response_model=s.KeyInfoOut)
def edit_user_key(
    user_id: PathId, key_id: PathId, body: s.KeyLimitIn, caller: Caller, db: DB
) -> s.KeyInfoOut:
    """Change one of the user's keys' spend limit (admin, service, or that user with a key
    without a spend limit: 403 for a limited key). ``limit_ucr`` and ``limit_period`` are
    validated as at creation; ``limit_ucr: null`` removes the limit. What was spent in the
    current period stays spent; a limit below it leaves 0. 404 for a key that is not this
    user's (or is revoked)."""
    scoped(caller, user_id)
    caller.require_key_manager()
    with db.write() as session:
        edited = auth.edit_key_limit(
            session,
            user_id,
            key_id,
            limit_ucr=body.limit_ucr,
            limit_period=body.limit_period,
            remove=body.removes_limit,
        )
    db.keys.clear()
    return present.key_info(edited)


@router.delete("/users/{user_id}/keys/{key_id}", status_code=204, response_class=Response)
def revoke_user_key(user_id: PathId, key_id: PathId, caller: Caller, db: DB) -> Response:
    """Revoke one of the user's keys (idempotent); it is refused (401) from then on. 404 for
    a key that is not this user's."""
    scoped(caller, user_id)
    caller.require_key_manager()
    with db.write() as session:
        auth.revoke_user_key(session, user_id, key_id)
    db.keys.clear()
    return Response(status_code=204)


@router.post(
    "/users/{user_id}/grants",
    status_code=201,
    response_model=s.GrantOut,
)
def grant(user_id: PathId, body: s.GrantIn, key: IdemKey, caller: Caller, db: DB) -> JSONResponse:
    """Grant credits to the user's wallet (admin): ``bonus`` from promotions, ``purchased``
    against cash. Idempotent on the ``Idempotency-Key`` header."""
    caller.require_admin()

    def run(session: Session) -> tuple[int, dict[str, object]]:
        transfer_id = wallets.grant(
            session,
            user_id,
            body.amount_ucr,
            source=wallets.GrantSource(body.source),
            idempotency_key=f"api:{caller.scope}:{key}",
            expires_at=body.expires_at,
        )
        balance = wallets.balance(session, user_id)
        out = s.GrantOut(
            transfer_id=transfer_id,
            user_id=user_id,
            amount_ucr=body.amount_ucr,
            amount=format_credits(body.amount_ucr),
            source=body.source,
            expires_at=body.expires_at,
            balance_ucr=balance.balance_ucr,
            balance=format_credits(balance.balance_ucr),
        )
        return 201, out.model_dump(mode="json")

    return db.idempotent(caller, key, f"/users/{user_id}/grants", body.model_dump(mode="json"), run)


@router.get("/users/{user_id}/wallet", response_model=s.WalletOut)
def wallet(user_id: PathId, caller: Caller, db: DB) -> s.WalletOut:
    """The user's wallet: posted balance, pending holds, available, unpaid earnings."""
    scoped(caller, user_id)
    with db.read() as session:
        w = wallets.balance(session, user_id)
        earned = get_balance(session, users.get_user(session, user_id).earnings_account_id)
    return s.WalletOut(
        user_id=user_id,
        balance_ucr=w.balance_ucr,
        balance=format_credits(w.balance_ucr),
        pending_ucr=w.pending_ucr,
        pending=format_credits(w.pending_ucr),
        available_ucr=w.available_ucr,
        available=format_credits(w.available_ucr),
        earnings_ucr=earned.balance,
        earnings=format_credits(earned.balance),
    )


@router.get("/users/{user_id}/transfers", response_model=s.TransferPage)
def transfers(
    user_id: PathId,
    caller: Caller,
    db: DB,
    code: TransferCode | None = None,
    since: s.Timestamp | None = None,
    until: s.Timestamp | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> s.TransferPage:
    """The user's ledger history (wallet and earnings accounts), newest first; filters by
    transfer code and by time (``since`` inclusive, ``until`` exclusive)."""
    scoped(caller, user_id)
    with db.read() as session:
        info = users.get_user(session, user_id)
        found = list_transfers(
            session,
            [info.wallet_account_id, info.earnings_account_id],
            code=code,
            since=since,
            until=until,
            before_id=decode_cursor(cursor),
            limit=limit,
        )
    return s.TransferPage(
        items=[
            s.TransferOut(
                id=t.id,
                code=t.code,
                kind=t.kind,
                direction="in" if t.direction == "in" else "out",
                amount_ucr=t.amount,
                amount=format_credits(t.amount),
                debit_account_id=t.debit_account_id,
                credit_account_id=t.credit_account_id,
                pending_id=t.pending_id,
                reverses_id=t.reverses_id,
                ref_type=t.ref_type,
                ref_id=t.ref_id,
                created_at=t.created_at,
                metadata=t.metadata,
            )
            for t in found
        ],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


Period = Annotated[str, Query(pattern="^(7d|30d|90d|365d|all)$")]


@router.get("/users/{user_id}/earnings", response_model=s.EarningsOut)
def earnings(user_id: PathId, caller: Caller, db: DB, period: Period = "all") -> s.EarningsOut:
    """What the user earned from others' use of their models in the period, per model,
    highest earnings first."""
    scoped(caller, user_id)
    with db.read() as session:
        users.get_user(session, user_id)
        found = analytics.creator_earnings(session, user_id, since=analytics.period_start(period))
    return s.EarningsOut(
        user_id=user_id,
        period=period,
        total_ucr=found.total_ucr,
        total=format_credits(found.total_ucr),
        total_tokens=found.total_tokens,
        total_uses=found.total_uses,
        models=[present.earning_line(line) for line in found.models],
    )
