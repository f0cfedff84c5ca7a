"""Admin: API keys, the pricing panel with recalculation, platform stats."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from modelbank.analytics import service as analytics
from modelbank.api import present
from modelbank.api import schemas as s
from modelbank.api import wallet_schemas as ws
from modelbank.api.deps import DB, Caller, PathId, decode_cursor, encode_cursor
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.auth import service as auth
from modelbank.catalog import manage
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.errors import ModelNotFound
from modelbank.money import format_credits, format_usd
from modelbank.pricing import admin as pricing_admin
from modelbank.pricing import service as pricing
from modelbank.wallets import grants, refunds

router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    responses=problem_responses(*COMMON_PROBLEMS),
)


@router.post("/keys", status_code=201, response_model=s.KeyOut)
def create_key(body: s.ServiceKeyIn, caller: Caller, db: DB) -> s.KeyOut:
    """A new admin or service key (admin). The secret is in this response only."""
    caller.require_admin()
    with db.write() as session:
        key = auth.create_key(session, body.role, name=body.name)
    return present.key(key)


@router.delete("/keys/{key_id}", status_code=204, response_class=Response)
def revoke_key(key_id: PathId, caller: Caller, db: DB) -> Response:
    """Revoke a key (admin); idempotent."""
    caller.require_admin()
    with db.write() as session:
        auth.revoke_key(session, key_id)
    db.keys.clear()
    return Response(status_code=204)


@router.get("/pricing", response_model=s.PricingPage)
def pricing_panel(
    caller: Caller,
    db: DB,
    category: Annotated[str | None, Query(max_length=64, pattern=s.NO_NUL)] = None,
    mode: Mode | None = None,
    search: Annotated[str | None, Query(max_length=200, pattern=s.NO_NUL)] = None,
    include_inactive: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=s.NO_NUL)] = None,
) -> s.PricingPage:
    """Every model's provider cost, price in force, markup and margin (admin)."""
    caller.require_admin()
    with db.read() as session:
        found = manage.list_models(
            session,
            category=category,
            mode=mode,
            search=search,
            active_only=not include_inactive,
            after_id=decode_cursor(cursor) or 0,
            limit=limit,
        )
        rows = pricing_admin.pricing_rows(session, found)
    return s.PricingPage(
        items=[present.pricing_row(r) for r in rows],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


@router.post("/pricing/recalculate", response_model=s.RecalculateOut)
def recalculate(body: s.RecalculateIn, caller: Caller, db: DB) -> s.RecalculateOut:
    """Reprice models from their provider cost with the current markups (admin): the listed
    ``model_ids``, or every active model matching the filters. Explicit prices are kept
    unless ``include_explicit``. One transaction: all or nothing."""
    caller.require_admin()
    markups = pricing.Markups(credits_per_usd=db.settings.credits_per_usd)
    with db.write() as session:
        if body.model_ids is not None:
            found = catalog.resolve_models(session, body.model_ids, active_only=False)
            missing = [i for i in body.model_ids if i not in found]
            if missing:
                raise ModelNotFound(f"no model {missing[0]}", model=missing[0])
            targets = [found[i] for i in dict.fromkeys(body.model_ids)]
        else:
            targets = manage.list_models(session, category=body.category, mode=body.mode)
        result = pricing_admin.recalculate(
            session, targets, markups=markups, include_explicit=body.include_explicit
        )
        updated_ids = {p.model_id for p in result.updated}
        rows = pricing_admin.pricing_rows(session, [m for m in targets if m.id in updated_ids])
    return s.RecalculateOut(
        updated=[present.pricing_row(r) for r in rows],
        unchanged=result.unchanged,
        skipped={str(k): v for k, v in result.skipped.items()},
    )


@router.get("/stats", response_model=s.StatsOut)
def stats(caller: Caller, db: DB) -> s.StatsOut:
    """Platform revenue, provider cost, margin, creator earnings owed, counts (admin)."""
    caller.require_admin()
    with db.read() as session:
        st = analytics.platform_stats(session)
        recognised = grants.recognition(session)
        refunded = refunds.total_refunded(session)
    return s.StatsOut(
        usage_revenue_ucr=st.usage_revenue_ucr,
        usage_revenue=format_credits(st.usage_revenue_ucr),
        access_revenue_ucr=st.access_revenue_ucr,
        provider_cost_uusd=st.provider_cost_uusd,
        provider_cost=format_usd(st.provider_cost_uusd),
        margin_ucr=st.margin_ucr,
        margin=format_credits(st.margin_ucr),
        creator_earnings_ucr=st.creator_earnings_ucr,
        earnings_owed_ucr=st.earnings_owed_ucr,
        wallet_balances_ucr=st.wallet_balances_ucr,
        users=st.users,
        active_models=st.active_models,
        usage_events=st.usage_events,
        revenue_recognition=ws.recognition_out(recognised),
        usage_refunded_ucr=refunded,
    )
