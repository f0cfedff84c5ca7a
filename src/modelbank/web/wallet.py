"""User — wallet: balance and low-balance warning, holds, grants, buying credits, API keys
with their spend limits (forms in :mod:`modelbank.web.keys`), transaction history with
filters and the CSV statement (DESIGN §5)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from modelbank.api.deps import PathId, scoped
from modelbank.auth import service as auth
from modelbank.auth.limits import LimitPeriod
from modelbank.catalog import service as catalog
from modelbank.errors import InvalidInput
from modelbank.ledger.codes import TransferCode
from modelbank.ledger.queries import list_transfers
from modelbank.ledger.service import get_balance
from modelbank.users import service as users
from modelbank.wallets import alerts, grants, holds, packages, plans, providers, purchases
from modelbank.wallets import service as wallets
from modelbank.wallets import subscriptions as subs
from modelbank.wallets.statement import statement_csv
from modelbank.web import forms, views
from modelbank.web.forms import Done, Form, int_field
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(include_in_schema=False)

HISTORY_PAGE = 50
"""Transfers per page of the history table."""
HOLDS_SHOWN = 50
GRANTS_SHOWN = 100
PENDING_PURCHASES_SHOWN = 20

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]


def _code(text: str | None) -> TransferCode | None:
    if not text:
        return None
    try:
        return TransferCode(text)
    except ValueError:
        raise InvalidInput(f"unknown transfer code {text[:40]!r}") from None


@router.get("/users/{user_id}/wallet")
def wallet_page(
    request: Request,
    user_id: PathId,
    viewer: SignedIn,
    code: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """The wallet page of ``user_id`` (its owner, or an admin)."""
    scoped(viewer.principal, user_id)
    transfer_code = _code(code)
    start, end = forms.date_range(since, until)
    db = state_of(request).db
    with db.read() as session:
        user = users.get_user(session, user_id)
        balance = wallets.balance(session, user_id)
        earned = get_balance(session, user.earnings_account_id)
        alert = alerts.state(session, user_id)
        pending_holds = holds.list_holds(session, user_id, status="pending", limit=HOLDS_SHOWN)
        open_grants = grants.list_grants(session, user_id, open_only=True, limit=GRANTS_SHOWN)
        on_sale = packages.list_packages(session)
        waiting = purchases.list_purchases(
            session, user_id=user_id, status=purchases.PENDING, limit=PENDING_PURCHASES_SHOWN
        )
        history = list_transfers(
            session,
            [user.wallet_account_id, user.earnings_account_id],
            code=transfer_code,
            since=start,
            until=end,
            before_id=before,
            limit=HISTORY_PAGE,
        )
        subscription = subs.current(session, user_id)
        plan = None if subscription is None else plans.get_plan(session, subscription.plan_id)
        api_keys = auth.list_user_keys(session, user_id)
        held_for = catalog.resolve_models(
            session, [h.model_id for h in pending_holds.items if h.model_id], active_only=False
        )
    package_names = {p.id: p.name for p in on_sale}
    filters = {"code": code or "", "from": since or "", "to": until or ""}
    return render(
        request,
        "wallet.html",
        viewer,
        {
            "user": user,
            "balance": balance,
            "earnings_ucr": earned.balance,
            "alert": alert,
            "low_balance": views.low_balance(alert),
            "holds": pending_holds.items,
            "hold_models": {m.id: m.name for m in held_for.values()},
            "grants": open_grants,
            "packages": on_sale,
            "pending_purchases": waiting,
            "subscription": subscription,
            "plan": plan,
            "package_names": package_names,
            "history": history,
            "accounts": {
                user.wallet_account_id: "wallet",
                user.earnings_account_id: "earnings",
            },
            "codes": [c.value for c in TransferCode],
            "filters": filters,
            "older": views.query_string(filters, before=history[-1].id)
            if len(history) == HISTORY_PAGE
            else None,
            "csv_query": views.query_string({"from": since or "", "to": until or ""}),
            "api_keys": api_keys,
            "key_periods": [p.value for p in LimitPeriod],
            "manages_keys": not viewer.principal.limited,
            "signed_in_key": viewer.principal.key_id,
            "now": views.utc_now(),
        },
    )


@router.post("/users/{user_id}/purchases")
def buy_credits(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Start buying a package: with Stripe configured the browser goes to Stripe Checkout;
    otherwise the purchase waits, pending, for an admin to confirm the payment (the
    ``manual`` provider)."""
    scoped(viewer.principal, user_id)
    package_id = int_field(form, "package_id", "package")
    db = state_of(request).db
    settings = db.settings
    name = "stripe" if settings.stripe_secret_key is not None else "manual"
    provider = providers.provider_for(name, settings, http_client=db.payment_http_client)
    page = f"/app/users/{user_id}/wallet"
    base = settings.public_base_url.rstrip("/")

    started: dict[str, Any] = {"purchase_id": None}

    def run(transaction: forms.Transaction) -> Done:
        info = purchases.start(
            transaction,
            provider,
            user_id,
            package_id,
            success_url=f"{base}{page}?checkout=success",
            cancel_url=f"{base}{page}?checkout=cancelled",
            on_recorded=lambda _session, purchase_id: started.update(purchase_id=purchase_id),
        )
        return _started(info, page)

    def replay(body: dict[str, Any]) -> Done:
        if body.get("purchase_id") is None:
            return Done(page, "This purchase was already started: it is listed below.")
        with db.read() as session:
            info = purchases.get_purchase(session, int(body["purchase_id"]))
        if info.status == purchases.FAILED:
            failed = f"Purchase #{info.id} failed at the payment provider: reload to try again."
            return Done(page, failed, kind="error")
        return _started(info, page)

    return forms.start_once(
        request,
        viewer,
        form,
        run,
        recorded=lambda _session: dict(started),
        replay=replay,
    )


def _started(info: purchases.PurchaseInfo, page: str) -> Done:
    """Where starting ``info`` leads: Stripe Checkout, or the wallet with a message."""
    if info.checkout_url:
        return Done(info.checkout_url)
    return Done(
        page,
        f"Purchase #{info.id} of {views.credits(info.credits_ucr)} credits started —"
        " pending: awaiting payment confirmation.",
    )


@router.get("/users/{user_id}/statement.csv")
def statement(
    request: Request,
    user_id: PathId,
    viewer: SignedIn,
    since: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=10)] = None,
) -> StreamingResponse:
    """The user's statement as CSV (the API's statement, with the session's scoping)."""
    scoped(viewer.principal, user_id)
    start, end = forms.date_range(since, until)
    chunks = statement_csv(state_of(request).db.read_analytics, user_id, since=start, until=end)
    name = f"statement-user-{user_id}.csv"
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
