"""Plans and subscriptions, referrals and promo codes over HTTP (issue 13). Thin: every rule
is in :mod:`modelbank.wallets.plans`, :mod:`~modelbank.wallets.subscriptions` and
:mod:`~modelbank.wallets.promos`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from modelbank.api import plan_schemas as ps
from modelbank.api.deps import (
    DB,
    Caller,
    Database,
    IdemKey,
    OptionalIdemKey,
    PathId,
    scoped,
)
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.auth.service import Principal
from modelbank.wallets import (
    billing,
    plans,
    promos,
    referrals,
    subscription_periods,
    subscriptions,
)
from modelbank.wallets.billing_errors import SubscriptionNotFound

router = APIRouter(
    prefix="/api/v1", tags=["subscriptions"], responses=problem_responses(*COMMON_PROBLEMS)
)


# ---------------------------------------------------------------- plans


@router.get("/plans", response_model=ps.PlanList)
def list_plans(caller: Caller, db: DB, include_inactive: bool = False) -> ps.PlanList:
    """Subscription plans on sale, in display order (any key; ``include_inactive`` for
    admins)."""
    if include_inactive:
        caller.require_admin()
    with db.read() as session:
        found = plans.list_plans(session, include_inactive=include_inactive)
    return ps.PlanList(items=[ps.plan_out(p) for p in found])


@router.post("/admin/plans", status_code=201, response_model=ps.PlanOut)
def create_plan(body: ps.PlanIn, caller: Caller, db: DB) -> ps.PlanOut:
    """Add a plan (admin): price per period (µUSD, whole cents), credits per period, rollover
    fraction (bps) and first-period bonus."""
    caller.require_admin()
    with db.write() as session:
        return ps.plan_out(plans.create_plan(session, **body.model_dump()))


@router.patch("/admin/plans/{plan_id}", response_model=ps.PlanOut)
def update_plan(plan_id: PathId, body: ps.PlanPatch, caller: Caller, db: DB) -> ps.PlanOut:
    """Change a plan (admin); later periods use the new amounts; ``is_active: false`` takes it
    off sale (live subscriptions keep renewing)."""
    caller.require_admin()
    with db.write() as session:
        return ps.plan_out(plans.update_plan(session, plan_id, **body.model_dump()))


# ---------------------------------------------------------------- subscriptions


def _billing(db: Database, name: str | None) -> billing.SubscriptionProvider:
    if name is None:
        name = "stripe" if db.settings.stripe_secret_key is not None else "manual"
    return billing.billing_for(name, db.settings, http_client=db.payment_http_client)


def _visible(
    session: Session, caller: Principal, subscription_id: int
) -> subscriptions.SubscriptionInfo:
    found = subscriptions.get_subscription(session, subscription_id)
    if not caller.can_act_for(found.user_id):
        raise SubscriptionNotFound(
            f"no subscription {subscription_id}", subscription_id=subscription_id
        )
    return found


@router.post(
    "/users/{user_id}/subscriptions",
    status_code=201,
    response_model=ps.SubscriptionOut,
    responses=problem_responses(409, 502),
)
async def subscribe(
    user_id: PathId, body: ps.SubscriptionIn, caller: Caller, db: DB
) -> ps.SubscriptionOut:
    """Subscribe to a plan: Stripe answers with ``checkout_url`` (a Checkout Session in
    subscription mode; each paid invoice grants that period's credits); ``manual`` waits for
    an admin to confirm each period. 409 when the user already has a live subscription."""
    scoped(caller, user_id)
    provider = _billing(db, body.provider)
    base = db.settings.public_base_url.rstrip("/")
    info = await run_in_threadpool(
        subscriptions.start,
        db.write,
        provider,
        user_id,
        body.plan_id,
        success_url=body.success_url or f"{base}/app/wallet?subscription=success",
        cancel_url=body.cancel_url or f"{base}/app/plans?subscription=cancelled",
    )
    return ps.subscription_out(info)


@router.get("/users/{user_id}/subscriptions", response_model=ps.SubscriptionList)
def list_subscriptions(user_id: PathId, caller: Caller, db: DB) -> ps.SubscriptionList:
    """The user's subscriptions, newest first."""
    scoped(caller, user_id)
    with db.read() as session:
        found = subscriptions.list_subscriptions(session, user_id)
    return ps.SubscriptionList(items=[ps.subscription_out(s) for s in found])


@router.get("/subscriptions/{subscription_id}", response_model=ps.SubscriptionOut)
def get_subscription(subscription_id: PathId, caller: Caller, db: DB) -> ps.SubscriptionOut:
    """One subscription: status, current period, whether it ends at the period's end."""
    with db.read() as session:
        return ps.subscription_out(_visible(session, caller, subscription_id))


@router.get("/subscriptions/{subscription_id}/periods", response_model=ps.PeriodList)
def list_periods(subscription_id: PathId, caller: Caller, db: DB) -> ps.PeriodList:
    """The subscription's paid periods and the grants they made, oldest first."""
    with db.read() as session:
        _visible(session, caller, subscription_id)
        found = subscriptions.list_periods(session, subscription_id)
    return ps.PeriodList(items=[ps.period_out(p) for p in found])


@router.post(
    "/subscriptions/{subscription_id}/cancel",
    response_model=ps.SubscriptionOut,
    responses=problem_responses(502),
)
async def cancel_subscription(
    subscription_id: PathId, caller: Caller, db: DB
) -> ps.SubscriptionOut:
    """Stop renewing (idempotent). Stripe: at the end of the paid period; manual or unpaid:
    now. Credits already granted last until their period ends."""

    def visible(found: subscriptions.SubscriptionInfo) -> None:
        if not caller.can_act_for(found.user_id):
            raise SubscriptionNotFound(
                f"no subscription {subscription_id}", subscription_id=subscription_id
            )

    provider = _billing(db, "stripe") if db.settings.stripe_secret_key is not None else None
    info = await run_in_threadpool(
        subscriptions.cancel, db.write, subscription_id, provider, check=visible
    )
    return ps.subscription_out(info)


@router.post(
    "/admin/subscriptions/{subscription_id}/periods",
    status_code=201,
    response_model=ps.PeriodOut,
    responses=problem_responses(409),
)
def confirm_period(subscription_id: PathId, key: IdemKey, caller: Caller, db: DB) -> JSONResponse:
    """Confirm the payment of a ``manual`` subscription's next period (admin): its credits are
    granted. Idempotent on the ``Idempotency-Key`` header."""
    caller.require_admin()

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        period = subscription_periods.confirm_manual_period(session, subscription_id)
        return 201, ps.period_out(period).model_dump(mode="json")

    return db.idempotent(caller, key, f"/admin/subscriptions/{subscription_id}/periods", {}, run)


# ---------------------------------------------------------------- referrals


@router.get("/users/{user_id}/referral", response_model=ps.ReferralOut)
def referral(user_id: PathId, caller: Caller, db: DB) -> ps.ReferralOut:
    """The user's referral code (made on first call), who referred them, and how many users
    they referred (and were rewarded for)."""
    scoped(caller, user_id)
    with db.write() as session:
        code = referrals.referral_code(session, user_id)
        mine = referrals.referral_of(session, user_id)
        referred, rewarded = referrals.referred_by(session, user_id)
    return ps.ReferralOut(
        user_id=user_id,
        code=code,
        referred_by_user_id=None if mine is None else mine.referrer_user_id,
        referred_count=referred,
        rewarded_count=rewarded,
    )


@router.post(
    "/users/{user_id}/referral",
    response_model=ps.ReferralOut,
    responses=problem_responses(409),
)
def apply_referral(user_id: PathId, body: ps.ReferralIn, caller: Caller, db: DB) -> ps.ReferralOut:
    """Record the referral code a new user signed up with (their first completed purchase
    rewards both). 409 ``referral_not_allowed``: their own code, already referred, or they
    already bought credits."""
    scoped(caller, user_id)
    with db.write() as session:
        referrals.apply_referral(session, user_id, body.code)
    return referral(user_id, caller, db)


@router.get("/admin/referral-settings", response_model=ps.ReferralSettings)
def referral_settings(caller: Caller, db: DB) -> ps.ReferralSettings:
    """The referral bonuses (µcr) and their lifetime (admin)."""
    caller.require_admin()
    with db.read() as session:
        return ps.ReferralSettings(**referrals.settings(session))


@router.put("/admin/referral-settings", response_model=ps.ReferralSettings)
def set_referral_settings(
    body: ps.ReferralSettingsIn, caller: Caller, db: DB
) -> ps.ReferralSettings:
    """Change the referral bonuses and lifetime (admin; null keeps a value)."""
    caller.require_admin()
    with db.write() as session:
        return ps.ReferralSettings(**referrals.set_settings(session, **body.model_dump()))


# ---------------------------------------------------------------- promo codes


@router.post("/admin/promo-codes", status_code=201, response_model=ps.PromoOut)
def create_promo(body: ps.PromoIn, caller: Caller, db: DB) -> ps.PromoOut:
    """Create a promo code (admin): bonus per redemption, optional expiry of the code and of
    the credits, optional use limit, once per user (default)."""
    caller.require_admin()
    with db.write() as session:
        return ps.promo_out(promos.create_promo(session, **body.model_dump()))


@router.get("/admin/promo-codes", response_model=ps.PromoList)
def list_promos(caller: Caller, db: DB) -> ps.PromoList:
    """Every promo code with its use count (admin)."""
    caller.require_admin()
    with db.read() as session:
        return ps.PromoList(items=[ps.promo_out(p) for p in promos.list_promos(session)])


@router.post("/admin/promo-codes/{promo_id}/deactivate", response_model=ps.PromoOut)
def deactivate_promo(promo_id: PathId, caller: Caller, db: DB) -> ps.PromoOut:
    """Switch a promo code off (admin; idempotent)."""
    caller.require_admin()
    with db.write() as session:
        return ps.promo_out(promos.deactivate_promo(session, promo_id))


@router.post(
    "/users/{user_id}/promo-redemptions",
    status_code=201,
    response_model=ps.RedemptionOut,
    responses={
        200: {
            "model": ps.RedemptionOut,
            "description": "Already redeemed by this user (a once-per-user code): the first"
            " redemption, replayed",
        },
        **problem_responses(409),
    },
)
def redeem(
    user_id: PathId, body: ps.RedemptionIn, caller: Caller, db: DB, key: OptionalIdemKey = None
) -> JSONResponse:
    """Redeem a promo code: a bonus grant. Idempotent for once-per-user codes: redeeming
    again answers 200 with the first redemption (``replayed: true``). With an
    ``Idempotency-Key`` (advised, and needed for codes a user may redeem many times): a
    retry with the same key and body answers the first response again
    (``Idempotency-Hit: true``) and grants nothing more; the same key with another body is
    409 ``idempotency_key_reused``. 409 ``promo_code_unavailable``: expired or used up."""
    scoped(caller, user_id)

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        info, new = promos.redeem(session, user_id, body.code)
        out = ps.redemption_out(info, replayed=not new)
        return 201 if new else 200, out.model_dump(mode="json")

    if key is not None:
        route = f"/users/{user_id}/promo-redemptions"
        return db.idempotent(caller, key, route, body.model_dump(mode="json"), run)
    with db.write() as session:
        status, response = run(session)
    return JSONResponse(response, status_code=status)


@router.get("/users/{user_id}/promo-redemptions", response_model=ps.RedemptionList)
def list_redemptions(user_id: PathId, caller: Caller, db: DB) -> ps.RedemptionList:
    """The user's promo redemptions, oldest first."""
    scoped(caller, user_id)
    with db.read() as session:
        found = promos.list_redemptions(session, user_id)
    return ps.RedemptionList(items=[ps.redemption_out(r) for r in found])
