"""Admin — the pool panel (DESIGN §9), three tabs:

- **Overview**: resources by status, quota, consumption, deposit credit, fees, clawbacks and
  open debts, the usage the pool served and the platform's revenue from it: the spread
  (what users paid − provider cost at the platform's credits per USD) plus the fees
  (:func:`modelbank.pool.panel.summary`).
- **Resources**: every resource with its owner, status, quota and health (breaker, success
  rate, EWMA latency and time to first token, in flight); suspend, resume, withdraw.
- **Logs**: every gateway request's route, newest first: who (user id) used which model
  through which resource, the outcome, attempts, latency and charge. Never a prompt.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from modelbank.api.deps import PathId
from modelbank.pool import reports, suspension
from modelbank.pool import service as pool
from modelbank.web import views
from modelbank.web.forms import Done, Form, submit_once, text_field
from modelbank.web.pool import pool_health
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(prefix="/admin/pool", include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]
Cursor = Annotated[int | None, Query(ge=1, le=2**63 - 1)]

RESOURCES_PAGE = 100
"""Resources per page of the Resources tab."""
LOGS_PAGE = 100
"""Route log rows per page of the Logs tab."""
TABS = (
    ("overview", "Overview", "/app/admin/pool"),
    ("resources", "Resources", "/app/admin/pool/resources"),
    ("logs", "Logs", "/app/admin/pool/logs"),
)


def _admin(viewer: Viewer) -> Viewer:
    viewer.principal.require_admin()
    return viewer


@router.get("")
def overview(request: Request, viewer: SignedIn) -> Response:
    """Totals over the pool and the platform's revenue from it."""
    _admin(viewer)
    db = state_of(request).db
    found = reports.panel(
        db.read, pool_health(request), credits_per_usd=db.settings.credits_per_usd, limit=1
    )
    with db.read() as session:
        _, fee_bps = pool.deposit_rates(session)
    s = found.summary
    return render(
        request,
        "admin_pool.html",
        viewer,
        {
            "tab": "overview",
            "tabs": TABS,
            "s": s,
            "revenue_ucr": s.served.spread_ucr + s.fee_ucr,
            "used_bps": reports.ratio_bps(s.consumed_uusd, s.quota_uusd - s.market_quota_uusd),
            "rate": views.decimal_text(db.settings.credits_per_usd),
            "fee_bps": fee_bps,
        },
    )


@router.get("/resources")
def resources_tab(request: Request, viewer: SignedIn, after: Cursor = None) -> Response:
    """Every resource (by id) with its owner, usage and health; actions by status."""
    _admin(viewer)
    db = state_of(request).db
    found = reports.panel(
        db.read,
        pool_health(request),
        credits_per_usd=db.settings.credits_per_usd,
        after_id=after or 0,
        limit=RESOURCES_PAGE,
    )
    lines = found.resources
    return render(
        request,
        "admin_pool.html",
        viewer,
        {
            "tab": "resources",
            "tabs": TABS,
            "s": found.summary,
            "lines": lines,
            "suspendable": suspension.SUSPENDABLE,
            "back": request.url.path + views.query_string({"after": after or ""}),
            "next_page": views.query_string({}, after=lines[-1].resource.id)
            if len(lines) == RESOURCES_PAGE
            else None,
        },
    )


@router.get("/logs")
def logs_tab(request: Request, viewer: SignedIn, before: Cursor = None) -> Response:
    """Every gateway request's route, newest first (older pages by cursor)."""
    _admin(viewer)
    with state_of(request).db.read() as session:
        found = reports.recent_logs(session, before_id=before, limit=LOGS_PAGE)
    return render(
        request,
        "admin_pool.html",
        viewer,
        {
            "tab": "logs",
            "tabs": TABS,
            "logs": found,
            "older": None
            if found.next_before_id is None
            else views.query_string({}, before=found.next_before_id),
        },
    )


def _back(form: FormData) -> str:
    back = text_field(form, "back")
    return back if back.startswith("/app/admin/pool") else "/app/admin/pool/resources"


@router.post("/resources/{resource_id}/suspend")
def suspend(request: Request, resource_id: PathId, viewer: Posted, form: Form) -> Response:
    """Take an active or depleted resource out of routing, with a reason its owner sees."""
    _admin(viewer)
    reason = text_field(form, "reason", required=True)

    def run(session: Session) -> Done:
        info = suspension.suspend(session, resource_id, reason)
        return Done(_back(form), f"Resource #{info.id} suspended: {info.status_reason}.")

    return submit_once(request, viewer, form, run)


@router.post("/resources/{resource_id}/resume")
def resume(request: Request, resource_id: PathId, viewer: Posted, form: Form) -> Response:
    """Put a suspended resource back into routing (active, or depleted if its quota is)."""
    _admin(viewer)

    def run(session: Session) -> Done:
        info = suspension.resume(session, resource_id)
        return Done(_back(form), f"Resource #{info.id} resumed: {info.status}.")

    return submit_once(request, viewer, form, run)


@router.post("/resources/{resource_id}/withdraw")
def withdraw(request: Request, resource_id: PathId, viewer: Posted, form: Form) -> Response:
    """Withdraw any resource: its unconsumed deposit credit is clawed back from the
    depositor (the rest as a debt)."""
    _admin(viewer)

    def run(session: Session) -> Done:
        info = pool.withdraw(session, resource_id)
        return Done(
            _back(form),
            f"Resource #{info.id} withdrawn: {views.credits(info.clawed_back_ucr)} credits"
            " of deposit credit clawed back.",
        )

    return submit_once(request, viewer, form, run)
