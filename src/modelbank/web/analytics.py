"""User — model analytics (the seed's "Model Analytics" tab, DESIGN §8): overview cards,
spending by category, owned models, 30-day activity and premium models to buy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from modelbank.analytics import service as analytics
from modelbank.api.deps import PathId, scoped
from modelbank.catalog import access, manage
from modelbank.catalog import service as catalog
from modelbank.users import service as users
from modelbank.wallets.access import purchase_access
from modelbank.web import views
from modelbank.web.forms import Done, Form, submit_once
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]


@router.get("/users/{user_id}/models")
def models_page(request: Request, user_id: PathId, viewer: SignedIn) -> Response:
    """The model analytics page of ``user_id`` (its owner, or an admin)."""
    scoped(viewer.principal, user_id)
    with state_of(request).db.read() as session:
        user = users.get_user(session, user_id)
        summary = analytics.user_model_analytics(session, user_id)
        earned = analytics.creator_earnings(session, user_id)
        every = manage.list_models(session, active_only=False)
        premium = [m.id for m in every if m.is_premium]
        bought = access.accessible(session, user_id, premium)
    categories = summary.by_category
    return render(
        request,
        "models.html",
        viewer,
        {
            "user": user,
            "a": summary,
            "owned": views.owned_rows(user_id, every, earned.models),
            "buyable": views.buyable(user_id, every, bought),
            "category_chart": views.bar_chart(
                [c.category for c in categories], [c.spent_ucr for c in categories]
            )
            if categories
            else None,
            "activity_chart": views.activity_chart(summary.activity),
            "charts": True,
        },
    )


@router.post("/users/{user_id}/models/{model_id}/access")
def buy_access(
    request: Request, user_id: PathId, model_id: PathId, viewer: Posted, form: Form
) -> Response:
    """Buy access to a premium model with credits (again: nothing more is charged); a
    session of a key with a spend limit may not (403)."""
    scoped(viewer.principal, user_id)
    viewer.principal.require_wallet_spender()

    def run(session: Session) -> Done:
        bought = purchase_access(session, user_id, model_id)
        name = catalog.get_model(session, model_id).name
        text = (
            f"Access to {name} bought for {views.credits(bought.price_ucr)} credits."
            if bought.new
            else f"You already have access to {name}: nothing was charged."
        )
        return Done(f"/app/users/{user_id}/models", text)

    return submit_once(request, viewer, form, run)
