"""Admin — the platform overview (DESIGN §8: revenue, provider cost, margin, creator
earnings and what is still owed, payouts by status, top models and creators, daily series,
and the revenue recognition split of DESIGN §5) and the payout queue (DESIGN §7: complete
a pending payout with its external reference, or fail it with a reason)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from modelbank.analytics import dashboards
from modelbank.analytics.dashboards.creator import pending_payouts
from modelbank.api.deps import PathId
from modelbank.db.base import utcnow
from modelbank.earnings import payouts
from modelbank.wallets import grants
from modelbank.wallets.grants import GrantSource
from modelbank.web import views
from modelbank.web.earnings import PERIOD_LABELS, Period
from modelbank.web.forms import Done, Form, submit_once, text_field
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(prefix="/admin", include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]

PAYOUTS_PAGE = 100
"""Payouts per page of the queue."""
TOP_SHOWN = 10
"""Models listed in the platform page's top-models table (every model counts in totals)."""
PayoutFilter = Literal["queue", "pending", "completed", "failed", "cancelled"]
"""``queue``: every payout, pending ones first (the admin's work list)."""
SOURCE_ORDER = [s.value for s in GrantSource]


@router.get("/platform")
def platform_page(request: Request, viewer: SignedIn, period: Period = "30d") -> Response:
    """Revenue, provider cost, margin, creator earnings and payouts over ``period``; earnings
    owed and pending payouts now; which grant sources paid for usage in the period."""
    viewer.principal.require_admin()
    db = state_of(request).db
    now = utcnow()
    with db.read_analytics() as session:
        found = dashboards.admin_analytics(
            session, period, credits_per_usd=db.settings.credits_per_usd, now=now
        )
        recognised = grants.recognition(session, since=dashboards.window(period, now=now).since)
    burned = sum(recognised.by_source_ucr.values())
    sources = [
        (source, amount, views.share_bps(amount, burned))
        for source, amount in sorted(
            recognised.by_source_ucr.items(),
            key=lambda kv: (SOURCE_ORDER.index(kv[0]) if kv[0] in SOURCE_ORDER else 99, kv[0]),
        )
    ]
    days = [d.day for d in found.daily]
    return render(
        request,
        "admin_platform.html",
        viewer,
        {
            "a": found,
            "t": found.totals,
            "margin_share": views.share_bps(found.totals.margin_ucr, found.totals.net_revenue_ucr),
            "top_models": found.models[:TOP_SHOWN],
            "recognised": recognised,
            "sources": sources,
            "rate": views.decimal_text(found.credits_per_usd),
            "period": period,
            "periods": [
                (key, label, request.url.path + views.query_string({"period": key}))
                for key, label in PERIOD_LABELS.items()
            ],
            "money_chart": views.daily_chart(
                days,
                [
                    ("revenue", [d.figures.net_revenue_ucr for d in found.daily]),
                    ("earnings", [d.figures.net_earnings_ucr for d in found.daily]),
                    ("margin", [d.figures.margin_ucr for d in found.daily]),
                ],
            ),
            "uses_chart": views.daily_chart(
                days, [("uses", [d.figures.uses for d in found.daily])], unit="uses", bars=True
            ),
            "charts": True,
        },
    )


@router.get("/payouts")
def payouts_page(
    request: Request,
    viewer: SignedIn,
    status: PayoutFilter = "queue",
    rank: Annotated[int, Query(ge=0, le=1)] = 0,
    after: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """Payout requests: by default the queue (pending first, then the rest, each oldest
    first), or those of one status; pending ones can be completed or failed here."""
    viewer.principal.require_admin()
    db = state_of(request).db
    with db.read() as session:
        page = payouts.list_payouts(
            session,
            status=None if status == "queue" else status,
            after=None if after is None else (rank, after),
            limit=PAYOUTS_PAGE,
            pending_first=status == "queue",
        )
        held = pending_payouts(session)
    rate = db.settings.credits_per_usd
    pending = [p for p in page.items if p.status is payouts.PayoutStatus.PENDING]
    filters = {"status": status}
    return render(
        request,
        "admin_payouts.html",
        viewer,
        {
            "payouts": page.items,
            "quotes": {p.id: payouts.uusd_at(p.amount_ucr, rate) for p in pending},
            "held_ucr": held,
            "rate": views.decimal_text(rate),
            "status": status,
            "statuses": ["queue", *[s.value for s in payouts.PayoutStatus]],
            "next_page": None
            if page.next_after is None
            else views.query_string(filters, rank=page.next_after[0], after=page.next_after[1]),
            "back": request.url.path + views.query_string(filters),
        },
    )


def _back(form: FormData) -> str:
    back = text_field(form, "back")
    return back if back.startswith("/app/admin/payouts") else "/app/admin/payouts"


@router.post("/payouts/{payout_id}/complete")
def complete_payout(request: Request, payout_id: PathId, viewer: Posted, form: Form) -> Response:
    """Mark a pending payout paid, after paying it outside modelbank: its held credits
    leave through ``world_payouts`` and the dollars are recorded at the current rate."""
    viewer.principal.require_admin()
    reference = text_field(form, "external_reference", required=True, label="external reference")
    db = state_of(request).db

    def run(session: Session) -> Done:
        done = payouts.complete(
            session, payout_id, reference, credits_per_usd=db.settings.credits_per_usd
        )
        paid = "" if done.amount_uusd is None else f" ({views.usd(done.amount_uusd)})"
        text = (
            f"Payout #{done.id} completed: {views.credits(done.amount_ucr)} credits{paid} paid"
            f" to user {done.user_id}, reference {done.external_reference}."
        )
        return Done(_back(form), text)

    return submit_once(request, viewer, form, run)


@router.post("/payouts/{payout_id}/fail")
def fail_payout(request: Request, payout_id: PathId, viewer: Posted, form: Form) -> Response:
    """Mark a pending payout failed with a reason: its hold is voided and the credits are
    back in the creator's earnings."""
    viewer.principal.require_admin()
    reason = text_field(form, "reason", required=True)

    def run(session: Session) -> Done:
        done = payouts.fail(session, payout_id, reason)
        text = (
            f"Payout #{done.id} failed: {views.credits(done.amount_ucr)} credits are back in"
            f" user {done.user_id}'s earnings."
        )
        return Done(_back(form), text)

    return submit_once(request, viewer, form, run)
