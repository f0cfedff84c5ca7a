"""Creator — earnings (DESIGN §7, §8): what the user's models earned over 7/30/90/365 days,
by day and by model, optionally for one model; payouts: what can be withdrawn, a request
form, the payout history and cancelling a pending request. Every user can be a creator."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from modelbank.analytics import dashboards
from modelbank.analytics import service as analytics
from modelbank.analytics.dashboards.creator import PAYOUT_HISTORY
from modelbank.api.deps import PathId, scoped
from modelbank.catalog import manage
from modelbank.catalog import service as catalog
from modelbank.earnings import payouts
from modelbank.earnings.errors import PayoutBelowMinimum, PayoutExceedsAvailable
from modelbank.errors import DomainError, InvalidInput
from modelbank.users import service as users
from modelbank.web import forms, views
from modelbank.web.forms import Done, Form, submit_once, text_field
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]
Period = Literal["7d", "30d", "90d", "365d"]
PERIOD_LABELS = {"7d": "7 days", "30d": "30 days", "90d": "90 days", "365d": "365 days"}
"""The period switch's choices (:data:`modelbank.analytics.dashboards.PERIOD_DAYS`)."""


def _page(user_id: int) -> str:
    return f"/app/users/{user_id}/earnings"


def _back(form: FormData, user_id: int) -> str:
    """The earnings page the form was on (its period and model kept), else the default."""
    back = text_field(form, "back")
    return back if back.startswith(_page(user_id)) else _page(user_id)


@router.get("/users/{user_id}/earnings")
def earnings_page(
    request: Request,
    user_id: PathId,
    viewer: SignedIn,
    period: Period = "30d",
    model: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """The earnings page of ``user_id`` (its owner, or an admin): the period's totals,
    daily series and per-model lines (of ``model`` only, when given), what a payout may take
    now, and the last payout requests with their details."""
    scoped(viewer.principal, user_id)
    db = state_of(request).db
    with db.read() as session:
        user = users.get_user(session, user_id)
        found = dashboards.creator_analytics(session, user_id, period, model)
        money = payouts.summary(session, user_id)
        history = [payouts.get_payout(session, line.id) for line in found.payouts]
        earning = analytics.creator_earnings(session, user_id).models
        options = views.owned_rows(user_id, manage.list_models(session, active_only=False), earning)
        chosen = catalog.get_model(session, model) if model is not None else None
    choices = [(r.model_id, r.name) for r in options]
    if chosen is not None and chosen.id not in {i for i, _ in choices}:
        choices.append((chosen.id, chosen.name))
    filters = {"period": period, "model": model or ""}
    return render(
        request,
        "creator_earnings.html",
        viewer,
        {
            "user": user,
            "a": found,
            "money": money,
            "history": history,
            "max_history": PAYOUT_HISTORY,
            "quotes": {
                p.id: payouts.uusd_at(p.amount_ucr, db.settings.credits_per_usd)
                for p in history
                if p.status is payouts.PayoutStatus.PENDING
            },
            "choices": choices,
            "chosen": chosen,
            "filters": filters,
            "periods": [
                (key, label, request.url.path + views.query_string(filters, period=key))
                for key, label in PERIOD_LABELS.items()
            ],
            "back": request.url.path + views.query_string(filters),
            "earnings_chart": views.daily_chart(
                [d.day for d in found.daily],
                [("net earnings", [d.net_ucr for d in found.daily])],
                bars=True,
            ),
            "charts": True,
        },
    )


def _refusal(exc: DomainError) -> str:
    """A refused payout request in credits (the service's message counts µcr)."""
    c = exc.context
    asked = views.credits(int(c["amount_ucr"]))
    if isinstance(exc, PayoutBelowMinimum):
        return (
            f"A payout must be at least {views.credits(int(c['minimum_ucr']))} credits;"
            f" you asked for {asked}. Nothing was requested."
        )
    owed = int(c.get("owed_ucr", 0))
    return (
        f"Only {views.credits(int(c['available_ucr']))} credits are available to pay out"
        + (f" ({views.credits(owed)} credits are owed back from refunded usage)" if owed else "")
        + f"; you asked for {asked}. Nothing was requested."
    )


@router.post("/users/{user_id}/payouts")
def request_payout(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Ask to withdraw an amount of earnings (credits typed, µcr exact): held at once,
    pending until an admin pays it. Below the minimum or above what is available: the
    message comes back on the page and nothing is written. Refused (403) to a session of
    a key with a spend limit."""
    scoped(viewer.principal, user_id)
    viewer.principal.require_wallet_spender()
    amount = forms.credits_amount(text_field(form, "amount", required=True), "amount")
    if not amount:
        raise InvalidInput("amount must be more than 0 credits")
    db = state_of(request).db

    def run(session: Session) -> Done:
        try:
            info = payouts.request(
                session, user_id, amount, credits_per_usd=db.settings.credits_per_usd
            )
        except (PayoutBelowMinimum, PayoutExceedsAvailable) as exc:
            raise type(exc)(_refusal(exc), **exc.context) from None
        state = (
            "pending: an admin pays it out"
            if info.status is payouts.PayoutStatus.PENDING
            else info.status.value
        )
        text = f"Payout #{info.id} of {views.credits(info.amount_ucr)} credits requested — {state}."
        return Done(_back(form, user_id), text)

    return submit_once(request, viewer, form, run)


@router.post("/users/{user_id}/payouts/{payout_id}/cancel")
def cancel_payout(
    request: Request, user_id: PathId, payout_id: PathId, viewer: Posted, form: Form
) -> Response:
    """Withdraw a pending payout request of ``user_id``: its credits are available again
    (another user's payout: 404; one no longer pending: the message on the page)."""
    scoped(viewer.principal, user_id)

    def run(session: Session) -> Done:
        done = payouts.cancel(session, payout_id, user_id=user_id)
        text = (
            f"Payout #{done.id} cancelled: {views.credits(done.amount_ucr)} credits are"
            " available to pay out again."
        )
        return Done(_back(form, user_id), text)

    return submit_once(request, viewer, form, run)
