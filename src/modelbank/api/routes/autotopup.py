"""Auto top-up and email notices over HTTP (issue 13). Thin: the rules are in
:mod:`modelbank.wallets.autotopup` and :mod:`modelbank.notices`."""

from __future__ import annotations

from fastapi import APIRouter

from modelbank.api import topup_schemas as ts
from modelbank.api.deps import DB, Caller, Database, PathId, scoped
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.notices import service as notices
from modelbank.users import service as users
from modelbank.wallets import autotopup, packages, providers

router = APIRouter(
    prefix="/api/v1", tags=["wallets"], responses=problem_responses(*COMMON_PROBLEMS)
)


def _provider_name(db: Database) -> str:
    return "stripe" if db.settings.stripe_secret_key is not None else "manual"


@router.get("/users/{user_id}/auto-topup", response_model=ts.AutoTopupOut)
def get_auto_topup(user_id: PathId, caller: Caller, db: DB) -> ts.AutoTopupOut:
    """The user's auto top-up (off with zero amounts when never set)."""
    scoped(caller, user_id)
    with db.read() as session:
        return ts.auto_topup_out(autotopup.get(session, user_id), _provider_name(db))


@router.put(
    "/users/{user_id}/auto-topup", response_model=ts.AutoTopupOut, responses=problem_responses(409)
)
def put_auto_topup(
    user_id: PathId, body: ts.AutoTopupIn, caller: Caller, db: DB
) -> ts.AutoTopupOut:
    """Set the user's auto top-up. With Stripe a saved card is needed first (409
    ``payment_method_required``); with the manual provider each top-up waits for an admin's
    confirmation. Enabling below the threshold starts a top-up at once (after the commit)."""
    scoped(caller, user_id)
    provider = _provider_name(db)
    with db.write() as session:
        info = autotopup.configure(session, user_id, provider=provider, **body.model_dump())
    return ts.auto_topup_out(info, provider)


@router.post(
    "/users/{user_id}/auto-topup/payment-method",
    status_code=201,
    response_model=ts.PaymentMethodSetupOut,
    responses=problem_responses(502),
)
def save_payment_method(user_id: PathId, caller: Caller, db: DB) -> ts.PaymentMethodSetupOut:
    """Start saving a card for auto top-ups (Stripe only): a Checkout Session in setup mode;
    the card is recorded when Stripe's signed ``setup_intent.succeeded`` arrives."""
    scoped(caller, user_id)
    stripe = providers.stripe_from_settings(db.settings, http_client=db.payment_http_client)
    with db.read() as session:
        users.get_user(session, user_id)
        customer = autotopup.get(session, user_id).stripe_customer_id
        currency = next((p.currency for p in packages.list_packages(session)), "usd")
    base = db.settings.public_base_url.rstrip("/")
    customer_id, session_id, url = stripe.create_setup_session(
        user_id,
        customer,
        currency=currency,
        success_url=f"{base}/app/wallet?card=saved",
        cancel_url=f"{base}/app/wallet?card=cancelled",
    )
    if customer is None:
        with db.write() as session:
            autotopup.save_customer(session, user_id, customer_id)
    return ts.PaymentMethodSetupOut(checkout_url=url, session_id=session_id)


@router.get("/users/{user_id}/email-notices", response_model=ts.EmailNoticesOut)
def get_email_notices(user_id: PathId, caller: Caller, db: DB) -> ts.EmailNoticesOut:
    """Where the user's email notices go (low balance, auto top-up, payouts)."""
    scoped(caller, user_id)
    with db.read() as session:
        users.get_user(session, user_id)
        return ts.email_notices_out(user_id, notices.get_recipient(session, user_id))


@router.put("/users/{user_id}/email-notices", response_model=ts.EmailNoticesOut)
def put_email_notices(
    user_id: PathId, body: ts.EmailNoticesIn, caller: Caller, db: DB
) -> ts.EmailNoticesOut:
    """Set the user's notice address (``enabled: false`` stops every notice)."""
    scoped(caller, user_id)
    with db.write() as session:
        users.get_user(session, user_id)
        found = notices.set_recipient(session, user_id, body.email, enabled=body.enabled)
    return ts.email_notices_out(user_id, found)
