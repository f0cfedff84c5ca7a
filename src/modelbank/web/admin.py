"""Admin — the model pricing panel (DESIGN §4: cost, price, markup, margin; edit as a new
price version; recalculate from provider cost; create and deactivate models) and the
purchases awaiting a manual payment confirmation (DESIGN §5)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from modelbank import onboarding
from modelbank.api.deps import PathId
from modelbank.catalog import manage
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.errors import ModelNotFound
from modelbank.catalog.tiers import Tier
from modelbank.errors import InvalidInput
from modelbank.pricing import admin as pricing_admin
from modelbank.pricing import service as pricing
from modelbank.wallets import packages, purchases
from modelbank.wallets.errors import PurchaseState
from modelbank.web import forms, views
from modelbank.web.forms import (
    Done,
    Form,
    checkbox,
    int_list,
    optional_int,
    optional_text,
    submit_once,
    text_field,
)
from modelbank.web.render import flash_redirect, render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(prefix="/admin", include_in_schema=False)

PRICING_PAGE = 200
"""Models per page of the pricing table."""
PURCHASES_PAGE = 100

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]
Status = Literal["active", "inactive", "all"]


def _admin(viewer: Viewer) -> Viewer:
    viewer.principal.require_admin()
    return viewer


def _markups(request: Request) -> pricing.Markups:
    return pricing.Markups(credits_per_usd=state_of(request).db.settings.credits_per_usd)


def _mode(text: str | None) -> Mode | None:
    if not text:
        return None
    try:
        return Mode(text)
    except ValueError:
        raise InvalidInput(f"unknown mode {text[:40]!r}") from None


def _tier(text: str | None) -> Tier | None:
    if not text:
        return None
    try:
        return Tier(text)
    except ValueError:
        raise InvalidInput(f"unknown tier {text[:40]!r}") from None


@router.get("/pricing")
def pricing_page(
    request: Request,
    viewer: SignedIn,
    q: Annotated[str | None, Query(max_length=200)] = None,
    category: Annotated[str | None, Query(max_length=64)] = None,
    mode: Annotated[str | None, Query(max_length=32)] = None,
    status: Status = "active",
    after: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """Every model's provider cost, price, markup, margin, tier, demand and flags."""
    _admin(viewer)
    found_mode = _mode(mode)
    with state_of(request).db.read() as session:
        every = manage.list_models(session, active_only=False)
        page = manage.list_models(
            session,
            category=category or None,
            mode=found_mode,
            search=q or None,
            active_only=status == "active",
            after_id=after or 0,
            limit=PRICING_PAGE,
        )
        shown = [m for m in page if status != "inactive" or not m.is_active]
        rows = pricing_admin.pricing_rows(session, shown)
    filters = {"q": q or "", "category": category or "", "mode": mode or "", "status": status}
    return render(
        request,
        "admin_pricing.html",
        viewer,
        {
            "rows": views.pricing_views(rows),
            "filters": filters,
            "categories": sorted({m.category for m in every}),
            "modes": [m.value for m in Mode],
            "tiers": [t.value for t in Tier],
            "demands": manage.DEMANDS,
            "total": len(every),
            "next_page": views.query_string(filters, after=page[-1].id)
            if len(page) == PRICING_PAGE
            else None,
            "back": request.url.path + views.query_string(filters),
        },
    )


@router.post("/pricing/recalculate")
def recalculate(request: Request, viewer: Posted, form: Form) -> Response:
    """Reprice the ticked models, or every active one, from their provider cost with the
    current markups (explicit prices kept unless asked)."""
    _admin(viewer)
    everything = text_field(form, "scope") == "all"
    ids = int_list(form, "model_id", "model")
    if not everything and not ids:
        raise InvalidInput("tick at least one model to recalculate, or recalculate all")
    with state_of(request).db.write() as session:
        if everything:
            targets = manage.list_models(session)
        else:
            found = catalog.resolve_models(session, ids, active_only=False)
            missing = [i for i in ids if i not in found]
            if missing:
                raise ModelNotFound(f"no model {missing[0]}", model=missing[0])
            targets = [found[i] for i in ids]
        result = pricing_admin.recalculate(
            session,
            targets,
            markups=_markups(request),
            include_explicit=checkbox(form, "include_explicit"),
        )
    reasons: dict[str, int] = {}
    for reason in result.skipped.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    skipped = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(reasons.items()))
    text = (
        f"Recalculated {len(targets)} model(s): {len(result.updated)} new price version(s),"
        f" {len(result.unchanged)} unchanged, {len(result.skipped)} skipped"
        + (f" ({skipped})" if skipped else "")
        + "."
    )
    return flash_redirect(request, "/app/admin/pricing", text)


@router.post("/models")
def create_model(request: Request, viewer: Posted, form: Form) -> Response:
    """Add a model, priced from the typed price (credits), else the typed provider cost
    (USD), else the cost genai-prices knows for its provider model name."""
    _admin(viewer)
    mode = _mode(text_field(form, "mode", required=True))
    assert mode is not None
    slug = text_field(form, "slug", required=True)
    setup = onboarding.ModelSetup(
        model=catalog.NewModel(
            slug=slug,
            name=text_field(form, "name") or slug,
            provider=text_field(form, "provider", required=True),
            provider_model_ref=optional_text(form, "provider_model_ref"),
            mode=mode,
            category=text_field(form, "category") or "General",
            tier=_tier(optional_text(form, "tier")),
            demand=text_field(form, "demand") or "medium",
            creator_id=optional_int(form, "creator_id", "creator id"),
            is_premium=checkbox(form, "is_premium"),
            access_price_ucr=forms.credits_amount(optional_text(form, "access_price"), "access")
            or 0,
        ),
        explicit_ucr=forms.credits_rates(_fields(form, "price")),
        cost_uusd=forms.usd_rates(_fields(form, "cost")),
    )
    with state_of(request).db.write() as session:
        made = onboarding.add_model(session, setup, markups=_markups(request))
    return flash_redirect(
        request,
        "/app/admin/pricing" + views.query_string({"q": made.model.slug, "status": "all"}),
        f"Model {made.model.name} created with price version {made.price.version}.",
    )


def _fields(form: FormData, prefix: str) -> dict[str, str | None]:
    return {
        f"{prefix}_{name}": optional_text(form, f"{prefix}_{name}")
        for name in ("input", "output", "cached", "request", "unit")
    }


@router.post("/models/{model_id}/edit")
def edit_model(request: Request, model_id: PathId, viewer: Posted, form: Form) -> Response:
    """Change a model's details; a changed price becomes a new explicit price version
    (history kept; the same service as ``PATCH /api/v1/models/{id}``)."""
    _admin(viewer)
    rates = forms.credits_rates(_fields(form, "price"))
    changes = manage.ModelChanges(
        category=optional_text(form, "category"),
        tier=_tier(optional_text(form, "tier")),
        demand=optional_text(form, "demand"),
        is_premium=checkbox(form, "is_premium"),
        access_price_ucr=forms.credits_amount(optional_text(form, "access_price"), "access"),
    )
    with state_of(request).db.write() as session:
        info = manage.update_model(session, model_id, changes)
        current = pricing.current_prices(session, [model_id]).get(model_id)
        repriced = None
        if rates is not None and (current is None or rates != current.price_ucr):
            repriced = onboarding.reprice(session, model_id, rates, markups=_markups(request))
    text = f"{info.name} saved" + (
        f": new price version {repriced.version}." if repriced else " (price unchanged)."
    )
    return flash_redirect(request, _back(form), text)


def _back(form: FormData) -> str:
    back = text_field(form, "back")
    return back if back.startswith("/app/admin/pricing") else "/app/admin/pricing"


@router.post("/models/{model_id}/deactivate")
def deactivate(request: Request, model_id: PathId, viewer: Posted, form: Form) -> Response:
    """Take a model out of use (its history stays)."""
    _admin(viewer)
    with state_of(request).db.write() as session:
        info = manage.deactivate_model(session, model_id)
    return flash_redirect(request, _back(form), f"{info.name} deactivated.")


@router.post("/models/{model_id}/activate")
def activate(request: Request, model_id: PathId, viewer: Posted, form: Form) -> Response:
    """Put a deactivated model back in use."""
    _admin(viewer)
    with state_of(request).db.write() as session:
        info = manage.update_model(session, model_id, manage.ModelChanges(is_active=True))
    return flash_redirect(request, _back(form), f"{info.name} reactivated.")


@router.get("/purchases")
def purchases_page(
    request: Request,
    viewer: SignedIn,
    status: Literal["pending", "completed", "expired", "refunded", "failed", "all"] = "pending",
    after: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """Purchases by status (pending first by default), oldest first; manual ones can be
    confirmed here."""
    _admin(viewer)
    with state_of(request).db.read() as session:
        found = purchases.list_purchases(
            session,
            status=None if status == "all" else status,
            after_id=after or 0,
            limit=PURCHASES_PAGE,
        )
        names = {p.id: p.name for p in packages.list_packages(session, include_inactive=True)}
    return render(
        request,
        "admin_purchases.html",
        viewer,
        {
            "purchases": found,
            "package_names": names,
            "status": status,
            "statuses": ["pending", "completed", "expired", "refunded", "failed", "all"],
            "next_page": views.query_string({"status": status}, after=found[-1].id)
            if len(found) == PURCHASES_PAGE
            else None,
        },
    )


@router.post("/purchases/{purchase_id}/confirm")
def confirm_purchase(request: Request, purchase_id: PathId, viewer: Posted, form: Form) -> Response:
    """Confirm a manual purchase's payment: its credits are granted, once."""
    _admin(viewer)

    def run(session: Session) -> Done:
        found = purchases.get_purchase(session, purchase_id)
        if found.provider != "manual":
            raise PurchaseState(
                f"purchase {purchase_id} is paid through {found.provider}: it completes when"
                " the provider confirms the payment",
                status=found.status,
            )
        done, new = purchases.complete(session, purchase_id)
        text = (
            f"Purchase #{done.id} confirmed: {views.credits(done.credits_ucr)} credits granted"
            f" to user {done.user_id}."
            if new
            else f"Purchase #{done.id} was already {done.status}: nothing more was granted."
        )
        return Done("/app/admin/purchases", text)

    return submit_once(request, viewer, form, run)
