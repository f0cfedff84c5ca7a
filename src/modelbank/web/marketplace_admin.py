"""Admin — the marketplace (DESIGN §10): volume, commission earned, escrow still held,
open listings and active allocations (:func:`modelbank.marketplace.service.admin_summary`),
and the disputes, each open one with a form to refund its unused escrow to the buyer or
release it to the seller, recorded with a reason and the admin key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from modelbank.marketplace import service as market
from modelbank.web import forms, views
from modelbank.web.forms import Done, Form, submit_once, text_field
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(prefix="/admin/marketplace", include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]

DISPUTES_SHOWN = 200
"""Disputes on the page, open ones first (the API pages through every one)."""
PAGE = "/app/admin/marketplace"


@router.get("")
def overview(request: Request, viewer: SignedIn) -> Response:
    """The marketplace's totals and its disputes (open first, then the resolved ones)."""
    viewer.principal.require_admin()
    db = state_of(request).db
    with db.read() as session:
        summary = market.admin_summary(session)
        open_ = market.list_disputes(session, status="open", limit=DISPUTES_SHOWN)
        closed = [
            d for d in market.list_disputes(session, limit=DISPUTES_SHOWN) if d.status != "open"
        ]
    return render(
        request,
        "marketplace_admin.html",
        viewer,
        {"summary": summary, "open_disputes": open_, "resolved": closed},
    )


@router.post("/resolve")
def resolve(request: Request, viewer: Posted, form: Form) -> Response:
    """Resolve an open dispute: refund (the unused escrow returns to the buyer) or release
    (it goes to the seller, less the commission), with a reason."""
    viewer.principal.require_admin()
    dispute_id = forms.int_field(form, "dispute_id", "dispute")
    action = text_field(form, "action", required=True, label="action")
    reason = text_field(form, "reason", required=True, label="reason")

    def run(session: Session) -> Done:
        done = market.resolve_dispute(
            session, dispute_id, viewer.principal.key_id, action=action, reason=reason
        )
        verb = "refunded to the buyer" if done.status == "refunded" else "released to the seller"
        return Done(
            PAGE,
            f"Dispute #{done.id} resolved: {views.credits(done.amount_ucr)} credits {verb}.",
        )

    return submit_once(request, viewer, form, run)
