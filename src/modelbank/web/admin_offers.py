"""Admin — plans and offers (issue 13): subscription plans (create, take off sale or put back
on), promo codes (create, switch off) and the ``manual`` subscriptions whose next period an
admin confirms. Thin over :mod:`modelbank.wallets.plans`, :mod:`~modelbank.wallets.promos`
and :mod:`~modelbank.wallets.subscription_periods`; every form is submitted once."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from modelbank.api.deps import PathId
from modelbank.errors import InvalidInput
from modelbank.users import service as users
from modelbank.wallets import plans, promos, subscription_periods, subscriptions
from modelbank.web import views
from modelbank.web.forms import (
    Done,
    Form,
    checkbox,
    credits_amount,
    decimal_field,
    optional_int,
    optional_text,
    submit_once,
    text_field,
)
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(prefix="/admin", include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]
PAGE = "/app/admin/offers"
UUSD_PER_USD = 1_000_000


def _admin(viewer: Viewer) -> Viewer:
    viewer.principal.require_admin()
    return viewer


@router.get("/offers")
def offers_page(request: Request, viewer: SignedIn) -> Response:
    """Plans, promo codes and manual subscriptions awaiting confirmation."""
    _admin(viewer)
    with state_of(request).db.read() as session:
        all_plans = plans.list_plans(session, include_inactive=True)
        codes = promos.list_promos(session)
        manual = subscriptions.list_manual(session)
        names = {u.id: u.external_id for u in users.list_users(session, limit=500)}
    return render(
        request,
        "admin_offers.html",
        viewer,
        {
            "plans": all_plans,
            "plan_names": {p.id: p.name for p in all_plans},
            "promos": codes,
            "manual": manual,
            "user_names": names,
        },
    )


def _required(value: int | None, label: str) -> int:
    if value is None:
        raise InvalidInput(f"{label} is required")
    return value


@router.post("/plans")
def create_plan(request: Request, viewer: Posted, form: Form) -> Response:
    """Create a plan from the form: price in USD (whole cents), credits, rollover in percent
    (two decimals at most), first-month bonus credits."""
    _admin(viewer)
    price = decimal_field(optional_text(form, "price_usd"), "price")
    rollover = decimal_field(optional_text(form, "rollover_percent"), "rollover") or Decimal(0)
    if price is None:
        raise InvalidInput("price is required")
    price_uusd, rollover_bps = price * UUSD_PER_USD, rollover * 100
    if price_uusd != price_uusd.to_integral_value():
        raise InvalidInput("price has more than 6 decimals")
    if rollover_bps != rollover_bps.to_integral_value():
        raise InvalidInput("rollover has more than 2 decimals")

    def run(session: Session) -> Done:
        made = plans.create_plan(
            session,
            slug=text_field(form, "slug", required=True, label="slug"),
            name=text_field(form, "name", required=True, label="name"),
            price_uusd=int(price_uusd),
            credits_ucr=_required(
                credits_amount(optional_text(form, "credits"), "credits"), "credits"
            ),
            rollover_bps=int(rollover_bps),
            first_period_bonus_ucr=credits_amount(optional_text(form, "bonus"), "bonus") or 0,
        )
        return Done(PAGE, f"Plan {made.name} created: {views.credits(made.credits_ucr)} credits.")

    return submit_once(request, viewer, form, run)


@router.post("/plans/{plan_id}/toggle")
def toggle_plan(request: Request, plan_id: PathId, viewer: Posted, form: Form) -> Response:
    """Take a plan off sale, or put it back on sale."""
    _admin(viewer)

    def run(session: Session) -> Done:
        found = plans.get_plan(session, plan_id)
        done = plans.update_plan(session, plan_id, is_active=not found.is_active)
        state = "on sale" if done.is_active else "off sale"
        return Done(PAGE, f"Plan {done.name} is {state}.")

    return submit_once(request, viewer, form, run)


@router.post("/promo-codes")
def create_promo(request: Request, viewer: Posted, form: Form) -> Response:
    """Create a promo code: bonus credits, optional use limit, once per user or not."""
    _admin(viewer)

    def run(session: Session) -> Done:
        made = promos.create_promo(
            session,
            code=text_field(form, "code", required=True, label="code"),
            bonus_ucr=_required(credits_amount(optional_text(form, "bonus"), "bonus"), "bonus"),
            use_limit=optional_int(form, "use_limit", "use limit"),
            per_user_once=checkbox(form, "per_user_once"),
        )
        return Done(PAGE, f"Promo code {made.code} created.")

    return submit_once(request, viewer, form, run)


@router.post("/promo-codes/{promo_id}/deactivate")
def deactivate_promo(request: Request, promo_id: PathId, viewer: Posted, form: Form) -> Response:
    """Switch a promo code off."""
    _admin(viewer)

    def run(session: Session) -> Done:
        done = promos.deactivate_promo(session, promo_id)
        return Done(PAGE, f"Promo code {done.code} is switched off.")

    return submit_once(request, viewer, form, run)


@router.post("/subscriptions/{subscription_id}/confirm")
def confirm_period(
    request: Request, subscription_id: PathId, viewer: Posted, form: Form
) -> Response:
    """Confirm the payment of a manual subscription's next period: its credits are granted."""
    _admin(viewer)

    def run(session: Session) -> Done:
        period = subscription_periods.confirm_manual_period(session, subscription_id)
        return Done(
            PAGE,
            f"Subscription #{subscription_id}: a period to {views.day(period.period_end)}"
            f" confirmed, {views.credits(period.credits_ucr + period.bonus_ucr)} credits granted.",
        )

    return submit_once(request, viewer, form, run)
