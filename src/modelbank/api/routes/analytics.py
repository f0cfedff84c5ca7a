"""Dashboards over HTTP (DESIGN §8): a creator's analytics, a user's model analytics and the
admin view, all read from the daily rollups (:mod:`modelbank.analytics.dashboards`). Thin:
parse, scope, call one service, present."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from modelbank.analytics import dashboards
from modelbank.api import analytics_schemas as a
from modelbank.api.deps import DB, Caller, PathId, scoped
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.api.schemas import MAX_ID

router = APIRouter(
    prefix="/api/v1", tags=["analytics"], responses=problem_responses(*COMMON_PROBLEMS)
)

Period = Annotated[
    str,
    Query(
        pattern="^(7d|30d|90d|365d)$",
        description="the last 7, 30, 90 or 365 UTC days, today included",
    ),
]
ModelFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="only this model's figures")]


@router.get("/users/{user_id}/creator-analytics", response_model=a.CreatorAnalyticsOut)
def creator_analytics(
    user_id: PathId, caller: Caller, db: DB, period: Period = "30d", model_id: ModelFilter = None
) -> a.CreatorAnalyticsOut:
    """A creator's earnings in the period (net of refund reversals), active models, uses,
    tokens, average per model, top models, daily series; payout history, pending payouts
    and what is available to withdraw now. The user themself, a service key or an admin;
    404 for others (and for an unknown ``model_id``)."""
    scoped(caller, user_id)
    with db.read_analytics() as session:
        found = dashboards.creator_analytics(session, user_id, period, model_id)
    return a.creator_analytics_out(found)


@router.get("/users/{user_id}/model-analytics", response_model=a.UserAnalyticsOut)
def model_analytics(
    user_id: PathId, caller: Caller, db: DB, period: Period = "30d"
) -> a.UserAnalyticsOut:
    """The user's model analytics: available vs purchased vs owned models, credits spent and
    earned (all time), the most profitable owned model, spend by category, 30 days of
    activity; and for the period: spend by model, category and usage type, a daily series,
    and the portfolio (stakes held, what each earned, paid out)."""
    scoped(caller, user_id)
    with db.read_analytics() as session:
        found = dashboards.user_analytics(session, user_id, period)
    return a.user_analytics_out(found)


@router.get("/admin/analytics", response_model=a.AdminAnalyticsOut)
def admin_analytics(caller: Caller, db: DB, period: Period = "30d") -> a.AdminAnalyticsOut:
    """Platform revenue, refunds, provider cost, creator earnings and margin in the period,
    per model, per category and per day; top creators; payouts by status; earnings owed
    (admin). Margins convert provider cost at the configured credits per USD."""
    caller.require_admin()
    with db.read_analytics() as session:
        found = dashboards.admin_analytics(
            session, period, credits_per_usd=db.settings.credits_per_usd
        )
    return a.admin_analytics_out(found)
