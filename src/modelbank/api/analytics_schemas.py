"""HTTP bodies of the analytics routes (creator, user and admin dashboards) and their
presenters from :mod:`modelbank.analytics.dashboards`. Amounts: ``*_ucr`` µcr (integers; the
headline ones with a display string beside them), provider cost ``*_uusd`` µUSD; days are UTC
dates. "Net" is after refunds (spend − refunded, earnings − reversed)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

from modelbank.analytics import dashboards as d
from modelbank.analytics.service import UserModelAnalytics
from modelbank.api import present
from modelbank.api import schemas as s
from modelbank.money import format_credits, format_usd

# --- creators -------------------------------------------------------------------------------


class CreatorModelOut(BaseModel):
    model_id: int
    slug: str
    name: str
    uses: int = Field(description="uses that paid this creator")
    tokens: int
    earnings_ucr: int
    reversed_ucr: int = Field(description="taken back by refunds (including amounts owed)")
    net_ucr: int
    net: str


class CreatorDayOut(BaseModel):
    day: date
    uses: int
    tokens: int
    earnings_ucr: int
    reversed_ucr: int
    net_ucr: int


class PayoutOut(BaseModel):
    id: int
    amount_ucr: int
    amount: str
    status: str = Field(description="pending, completed, failed or cancelled")
    amount_uusd: int | None = Field(description="µUSD paid, once completed")
    created_at: datetime
    resolved_at: datetime | None


class CreatorAnalyticsOut(BaseModel):
    user_id: int
    period: str
    start: date = Field(description="first UTC day of the period")
    end: date = Field(description="last UTC day of the period (today)")
    model_id: int | None = Field(description="the model filter, if any")
    earnings_ucr: int = Field(description="gross earnings in the period")
    reversed_ucr: int
    net_earnings_ucr: int = Field(description="total earnings net of refund reversals")
    net_earnings: str
    active_models: int = Field(description="models with uses in the period")
    uses: int
    tokens: int
    average_per_model_ucr: int = Field(description="net earnings ÷ active models, half-even")
    top_models: list[CreatorModelOut] = Field(description="by net earnings, at most 10")
    daily: list[CreatorDayOut] = Field(description="every day of the period, zeros filled")
    payouts: list[PayoutOut] = Field(description="the last 20 payout requests, newest first")
    pending_payouts_ucr: int
    earnings_balance_ucr: int = Field(description="the earnings account's posted balance")
    owed_ucr: int = Field(description="refund reversals still owed (payouts must leave them)")
    available_ucr: int = Field(description="withdrawable now: balance − pending − owed, ≥ 0")
    available: str


def creator_analytics_out(a: d.CreatorAnalytics) -> CreatorAnalyticsOut:
    return CreatorAnalyticsOut(
        user_id=a.user_id,
        period=a.period,
        start=a.start,
        end=a.end,
        model_id=a.model_id,
        earnings_ucr=a.earnings_ucr,
        reversed_ucr=a.reversed_ucr,
        net_earnings_ucr=a.net_earnings_ucr,
        net_earnings=format_credits(a.net_earnings_ucr),
        active_models=a.active_models,
        uses=a.uses,
        tokens=a.tokens,
        average_per_model_ucr=a.average_per_model_ucr,
        top_models=[
            CreatorModelOut(
                model_id=m.model_id,
                slug=m.slug,
                name=m.name,
                uses=m.uses,
                tokens=m.tokens,
                earnings_ucr=m.earnings_ucr,
                reversed_ucr=m.reversed_ucr,
                net_ucr=m.net_ucr,
                net=format_credits(m.net_ucr),
            )
            for m in a.top_models
        ],
        daily=[
            CreatorDayOut(
                day=x.day,
                uses=x.uses,
                tokens=x.tokens,
                earnings_ucr=x.earnings_ucr,
                reversed_ucr=x.reversed_ucr,
                net_ucr=x.net_ucr,
            )
            for x in a.daily
        ],
        payouts=[
            PayoutOut(
                id=p.id,
                amount_ucr=p.amount_ucr,
                amount=format_credits(p.amount_ucr),
                status=p.status,
                amount_uusd=p.amount_uusd,
                created_at=p.created_at,
                resolved_at=p.resolved_at,
            )
            for p in a.payouts
        ],
        pending_payouts_ucr=a.pending_payouts_ucr,
        earnings_balance_ucr=a.earnings_balance_ucr,
        owed_ucr=a.owed_ucr,
        available_ucr=a.available_ucr,
        available=format_credits(a.available_ucr),
    )


# --- users ----------------------------------------------------------------------------------


class SpendOut(BaseModel):
    key: str = Field(description="model id, category or usage type")
    label: str = Field(description="the model's name, else the key")
    uses: int
    tokens: int
    spent_ucr: int
    refunded_ucr: int
    net_ucr: int
    net: str


class UserDayOut(BaseModel):
    day: date
    uses: int
    tokens: int
    spent_ucr: int
    refunded_ucr: int
    earned_ucr: int = Field(description="earned from others' use, net of reversals")


class StakeOut(BaseModel):
    model_id: int
    slug: str
    name: str
    share_bps: int
    implicit: bool = Field(description="the creator's 100% of a model without beneficiaries")
    earned_period_ucr: int = Field(description="net, in the period")
    earned_total_ucr: int = Field(description="net, all time")


class PortfolioOut(BaseModel):
    stakes: list[StakeOut]
    earned_total_ucr: int = Field(description="net earnings all time, every model")
    paid_out_ucr: int = Field(description="completed payouts")
    paid_out_uusd: int
    pending_payouts_ucr: int


class UserAnalyticsOut(s.ModelAnalyticsOut):
    """The original fields (all time, gross; ``activity_30d``) plus the period's."""

    period: str
    start: date
    end: date
    uses: int = Field(description="uses in the period")
    tokens: int
    spent_ucr: int = Field(description="charged in the period")
    refunded_ucr: int
    net_spent_ucr: int
    net_spent: str
    spend_by_model: list[SpendOut] = Field(description="highest net spend first")
    spend_by_category: list[SpendOut]
    spend_by_usage_type: list[SpendOut]
    daily: list[UserDayOut] = Field(description="every day of the period, zeros filled")
    portfolio: PortfolioOut


def _spend(line: d.SpendLine) -> SpendOut:
    return SpendOut(
        key=line.key,
        label=line.label,
        uses=line.uses,
        tokens=line.tokens,
        spent_ucr=line.spent_ucr,
        refunded_ucr=line.refunded_ucr,
        net_ucr=line.net_ucr,
        net=format_credits(line.net_ucr),
    )


def _overview(a: UserModelAnalytics) -> dict[str, object]:
    best = a.most_profitable_model
    return {
        "user_id": a.user_id,
        "models_available": a.models_available,
        "models_purchased": a.models_purchased,
        "models_owned": a.models_owned,
        "credits_spent_ucr": a.credits_spent_ucr,
        "credits_spent": format_credits(a.credits_spent_ucr),
        "usage_spent_ucr": a.usage_spent_ucr,
        "access_spent_ucr": a.access_spent_ucr,
        "earnings_from_owned_ucr": a.earnings_from_owned_ucr,
        "earnings_from_owned": format_credits(a.earnings_from_owned_ucr),
        "most_profitable_model": present.earning_line(best) if best else None,
        "by_category": [
            s.CategoryOut(
                category=c.category,
                uses=c.uses,
                spent_ucr=c.spent_ucr,
                spent=format_credits(c.spent_ucr),
            )
            for c in a.by_category
        ],
        "activity_30d": [
            s.DayOut(day=x.day, uses=x.uses, spent_ucr=x.spent_ucr, earned_ucr=x.earned_ucr)
            for x in a.activity
        ],
    }


def user_analytics_out(a: d.UserAnalytics) -> UserAnalyticsOut:
    p = a.portfolio
    return UserAnalyticsOut.model_validate(
        {
            **_overview(a.overview),
            "period": a.period,
            "start": a.start,
            "end": a.end,
            "uses": a.uses,
            "tokens": a.tokens,
            "spent_ucr": a.spent_ucr,
            "refunded_ucr": a.refunded_ucr,
            "net_spent_ucr": a.net_spent_ucr,
            "net_spent": format_credits(a.net_spent_ucr),
            "spend_by_model": [_spend(x) for x in a.by_model],
            "spend_by_category": [_spend(x) for x in a.by_category],
            "spend_by_usage_type": [_spend(x) for x in a.by_usage_type],
            "daily": [
                UserDayOut(
                    day=x.day,
                    uses=x.uses,
                    tokens=x.tokens,
                    spent_ucr=x.spent_ucr,
                    refunded_ucr=x.refunded_ucr,
                    earned_ucr=x.earned_ucr,
                )
                for x in a.daily
            ],
            "portfolio": PortfolioOut(
                stakes=[
                    StakeOut(
                        model_id=x.model_id,
                        slug=x.slug,
                        name=x.name,
                        share_bps=x.share_bps,
                        implicit=x.implicit,
                        earned_period_ucr=x.earned_period_ucr,
                        earned_total_ucr=x.earned_total_ucr,
                    )
                    for x in p.stakes
                ],
                earned_total_ucr=p.earned_total_ucr,
                paid_out_ucr=p.paid_out_ucr,
                paid_out_uusd=p.paid_out_uusd,
                pending_payouts_ucr=p.pending_payouts_ucr,
            ),
        }
    )


# --- admins ---------------------------------------------------------------------------------


class FiguresOut(BaseModel):
    uses: int
    tokens: int
    revenue_ucr: int = Field(description="charged")
    refunded_ucr: int
    net_revenue_ucr: int
    cost_uusd: int = Field(description="provider cost, µUSD (not refunded)")
    cost: str
    earnings_ucr: int = Field(description="creator earnings paid")
    reversed_ucr: int = Field(description="earnings taken back by refunds")
    net_earnings_ucr: int
    margin_ucr: int = Field(
        description="net revenue − cost × credits_per_usd (half-even) − net earnings"
    )
    margin: str


class ModelFiguresOut(FiguresOut):
    model_id: int
    slug: str
    name: str
    category: str


class CategoryFiguresOut(FiguresOut):
    category: str
    models: int = Field(description="models with activity in the period")


class DayFiguresOut(FiguresOut):
    day: date


class CreatorFiguresOut(BaseModel):
    user_id: int
    external_id: str
    display_name: str
    models: int
    uses: int
    earnings_ucr: int
    reversed_ucr: int
    net_ucr: int
    net: str


class PayoutStatusOut(BaseModel):
    status: str
    count: int
    amount_ucr: int
    amount_uusd: int = Field(description="µUSD paid (completed payouts)")


class AdminAnalyticsOut(BaseModel):
    period: str
    start: date
    end: date
    credits_per_usd: str = Field(description="rate used to convert provider cost for margins")
    totals: FiguresOut
    models: list[ModelFiguresOut] = Field(description="highest revenue first")
    categories: list[CategoryFiguresOut]
    daily: list[DayFiguresOut] = Field(description="every day of the period, zeros filled")
    top_creators: list[CreatorFiguresOut] = Field(description="by net earnings, at most 10")
    payouts: list[PayoutStatusOut] = Field(description="requests created in the period")
    earnings_owed_ucr: int = Field(description="Σ creators' unpaid earnings balances, now")
    earnings_owed: str
    pending_payouts_ucr: int = Field(description="all pending payout requests, now")


def _figures(f: d.Figures) -> dict[str, object]:
    return {
        "uses": f.uses,
        "tokens": f.tokens,
        "revenue_ucr": f.revenue_ucr,
        "refunded_ucr": f.refunded_ucr,
        "net_revenue_ucr": f.net_revenue_ucr,
        "cost_uusd": f.cost_uusd,
        "cost": format_usd(f.cost_uusd),
        "earnings_ucr": f.earnings_ucr,
        "reversed_ucr": f.reversed_ucr,
        "net_earnings_ucr": f.net_earnings_ucr,
        "margin_ucr": f.margin_ucr,
        "margin": format_credits(f.margin_ucr),
    }


def admin_analytics_out(a: d.AdminAnalytics) -> AdminAnalyticsOut:
    return AdminAnalyticsOut(
        period=a.period,
        start=a.start,
        end=a.end,
        credits_per_usd=str(a.credits_per_usd),
        totals=FiguresOut.model_validate(_figures(a.totals)),
        models=[
            ModelFiguresOut.model_validate(
                {
                    "model_id": m.model_id,
                    "slug": m.slug,
                    "name": m.name,
                    "category": m.category,
                    **_figures(m.figures),
                }
            )
            for m in a.models
        ],
        categories=[
            CategoryFiguresOut.model_validate(
                {"category": c.category, "models": c.models, **_figures(c.figures)}
            )
            for c in a.categories
        ],
        daily=[
            DayFiguresOut.model_validate({"day": x.day, **_figures(x.figures)}) for x in a.daily
        ],
        top_creators=[
            CreatorFiguresOut(
                user_id=c.user_id,
                external_id=c.external_id,
                display_name=c.display_name,
                models=c.models,
                uses=c.uses,
                earnings_ucr=c.earnings_ucr,
                reversed_ucr=c.reversed_ucr,
                net_ucr=c.net_ucr,
                net=format_credits(c.net_ucr),
            )
            for c in a.top_creators
        ],
        payouts=[
            PayoutStatusOut(
                status=p.status, count=p.count, amount_ucr=p.amount_ucr, amount_uusd=p.amount_uusd
            )
            for p in a.payouts
        ],
        earnings_owed_ucr=a.earnings_owed_ucr,
        earnings_owed=format_credits(a.earnings_owed_ucr),
        pending_payouts_ucr=a.pending_payouts_ucr,
    )
