"""User — plans and offers (issue 13): the subscription plans with a Subscribe button, the
user's subscription (status, current period, cancel), their referral code, and a form to
redeem a promo code. Every form carries the CSRF token and a form key (submitted once)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from modelbank.api.deps import PathId, scoped
from modelbank.users import service as users
from modelbank.wallets import billing, plans, promos, referrals, subscriptions
from modelbank.wallets.billing_errors import SubscriptionNotFound
from modelbank.web import forms, views
from modelbank.web.forms import Done, Form, int_field, submit_once, text_field
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]


def _page(user_id: int) -> str:
    return f"/app/users/{user_id}/plans"


@router.get("/users/{user_id}/plans")
def plans_page(request: Request, user_id: PathId, viewer: SignedIn) -> Response:
    """Plans on sale, the user's subscription, referral code and promo redemptions."""
    scoped(viewer.principal, user_id)
    db = state_of(request).db
    with db.write() as session:  # the referral code is made on first view
        user = users.get_user(session, user_id)
        on_sale = plans.list_plans(session)
        mine = subscriptions.current(session, user_id)
        plan_names = {p.id: p.name for p in plans.list_plans(session, include_inactive=True)}
        code = referrals.referral_code(session, user_id)
        referred, rewarded = referrals.referred_by(session, user_id)
        redeemed = promos.list_redemptions(session, user_id)
        bonus = referrals.settings(session)
    return render(
        request,
        "plans.html",
        viewer,
        {
            "user": user,
            "plans": on_sale,
            "subscription": mine,
            "plan_names": plan_names,
            "referral_code": code,
            "referred": referred,
            "rewarded": rewarded,
            "redemptions": redeemed,
            "referral_bonus_ucr": bonus["referral_referred_bonus_ucr"],
        },
    )


@router.post("/users/{user_id}/subscriptions")
def subscribe(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Subscribe to a plan: with Stripe configured the browser goes to Stripe Checkout
    (subscription mode); otherwise the subscription waits for an admin to confirm each
    period (the ``manual`` provider)."""
    scoped(viewer.principal, user_id)
    plan_id = int_field(form, "plan_id", "plan")
    db = state_of(request).db
    settings = db.settings
    name = "stripe" if settings.stripe_secret_key is not None else "manual"
    provider = billing.billing_for(name, settings, http_client=db.payment_http_client)
    base = settings.public_base_url.rstrip("/")
    page = _page(user_id)

    def run(transaction: forms.Transaction) -> Done:
        info = subscriptions.start(
            transaction,
            provider,
            user_id,
            plan_id,
            success_url=f"{base}/app/users/{user_id}/wallet?subscription=success",
            cancel_url=f"{base}{page}?subscription=cancelled",
        )
        return _started(info, page)

    def replay(_body: dict[str, Any]) -> Done:
        return Done(page, "This subscription was already started: its status is below.")

    return forms.start_once(request, viewer, form, run, recorded=lambda _session: {}, replay=replay)


def _started(info: subscriptions.SubscriptionInfo, page: str) -> Done:
    if info.checkout_url:
        return Done(info.checkout_url)
    return Done(
        page,
        f"Subscription #{info.id} started — pending: credits arrive when the platform"
        " confirms the first payment.",
    )


@router.post("/users/{user_id}/subscriptions/{subscription_id}/cancel")
def cancel(
    request: Request, user_id: PathId, subscription_id: PathId, viewer: Posted, form: Form
) -> Response:
    """Stop the user's subscription renewing (another user's: 404); Stripe is called with
    no database lock held."""
    scoped(viewer.principal, user_id)
    db = state_of(request).db
    settings = db.settings
    provider = None
    if settings.stripe_secret_key is not None:
        provider = billing.billing_for("stripe", settings, http_client=db.payment_http_client)

    def mine(found: subscriptions.SubscriptionInfo) -> None:
        if found.user_id != user_id:
            raise SubscriptionNotFound(f"no subscription {subscription_id}")

    def run(transaction: forms.Transaction) -> Done:
        done = subscriptions.cancel(transaction, subscription_id, provider, check=mine)
        text = (
            f"Subscription #{done.id} ends with its current period."
            if done.cancel_at_period_end
            else f"Subscription #{done.id} is cancelled."
        )
        return Done(_page(user_id), text)

    def replay(_body: dict[str, Any]) -> Done:
        return Done(_page(user_id), "This cancellation was already sent.")

    return forms.start_once(request, viewer, form, run, recorded=lambda _s: {}, replay=replay)


@router.post("/users/{user_id}/promo-redemptions")
def redeem(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Redeem a promo code (a bonus grant; a code already redeemed says so)."""
    scoped(viewer.principal, user_id)
    code = text_field(form, "code", required=True, label="promo code")

    def run(session: Session) -> Done:
        info, new = promos.redeem(session, user_id, code)
        amount = views.credits(info.bonus_ucr)
        if not new:
            return Done(_page(user_id), f"You already redeemed {info.code} ({amount} credits).")
        return Done(_page(user_id), f"{info.code} redeemed: {amount} bonus credits added.")

    return submit_once(request, viewer, form, run)
