"""Wallets over HTTP (DESIGN §5): packages, purchases (Stripe and manual), the Stripe webhook,
grants, holds, refunds, low-balance alerts and the CSV statement. Thin: every rule is in
:mod:`modelbank.wallets`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from modelbank.api import wallet_schemas as ws
from modelbank.api.deps import (
    DB,
    Caller,
    Database,
    IdemKey,
    PathId,
    decode_cursor,
    encode_cursor,
    scoped,
)
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.api.schemas import Timestamp
from modelbank.audit.context import Actor, acting_as
from modelbank.auth.errors import Forbidden
from modelbank.auth.service import Principal
from modelbank.catalog import service as catalog
from modelbank.db.base import utcnow
from modelbank.metering import refunds
from modelbank.metering.capture import capture
from modelbank.money import format_credits
from modelbank.wallets import (
    alerts,
    billing,
    grants,
    holds,
    packages,
    providers,
    purchases,
    subscription_events,
)
from modelbank.wallets.errors import HoldNotFound, PurchaseNotFound, PurchaseState
from modelbank.wallets.statement import statement_csv

router = APIRouter(
    prefix="/api/v1", tags=["wallets"], responses=problem_responses(*COMMON_PROBLEMS)
)

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the last page")]


# ---------------------------------------------------------------- packages


@router.get("/packages", response_model=ws.PackageList)
def list_packages(caller: Caller, db: DB, include_inactive: bool = False) -> ws.PackageList:
    """Credit packages on sale, in display order, with price per credit (any key;
    ``include_inactive`` for admins)."""
    if include_inactive:
        caller.require_admin()
    with db.read() as session:
        found = packages.list_packages(session, include_inactive=include_inactive)
    return ws.PackageList(items=[ws.package_out(p) for p in found])


@router.post("/admin/packages", status_code=201, response_model=ws.PackageOut)
def create_package(body: ws.PackageIn, caller: Caller, db: DB) -> ws.PackageOut:
    """Add a credit package (admin). Prices in µUSD, whole cents."""
    caller.require_admin()
    with db.write() as session:
        return ws.package_out(packages.create_package(session, **body.model_dump()))


@router.patch("/admin/packages/{package_id}", response_model=ws.PackageOut)
def update_package(
    package_id: PathId, body: ws.PackagePatch, caller: Caller, db: DB
) -> ws.PackageOut:
    """Change a package (admin); ``is_active: false`` takes it off sale. Purchases already
    started keep their amounts."""
    caller.require_admin()
    with db.write() as session:
        return ws.package_out(packages.update_package(session, package_id, **body.model_dump()))


# ---------------------------------------------------------------- purchases


def _provider(db: Database, name: str | None) -> providers.PaymentProvider:
    settings = db.settings
    if name is None:
        name = "stripe" if settings.stripe_secret_key is not None else "manual"
    return providers.provider_for(name, settings, http_client=db.payment_http_client)


@router.post(
    "/users/{user_id}/purchases",
    status_code=201,
    response_model=ws.PurchaseOut,
    responses=problem_responses(502),
)
async def start_purchase(
    user_id: PathId, body: ws.PurchaseIn, caller: Caller, db: DB
) -> ws.PurchaseOut:
    """Start buying a package: Stripe answers with ``checkout_url`` (credits arrive when
    Stripe confirms the payment at ``/webhooks/stripe``); ``manual`` waits for an admin's
    confirmation. Nothing is granted yet."""
    scoped(caller, user_id)
    provider = _provider(db, body.provider)
    base = db.settings.public_base_url.rstrip("/")
    success = body.success_url or (
        f"{base}/app/wallet?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"
    )
    cancel = body.cancel_url or f"{base}/app/wallet?checkout=cancelled"
    info = await run_in_threadpool(
        purchases.start,
        db.write,
        provider,
        user_id,
        body.package_id,
        success_url=success,
        cancel_url=cancel,
    )
    return ws.purchase_out(info)


@router.get("/users/{user_id}/purchases", response_model=ws.PurchasePage)
def list_purchases(
    user_id: PathId,
    caller: Caller,
    db: DB,
    status: Literal["pending", "completed", "expired", "refunded", "failed"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ws.PurchasePage:
    """The user's purchases, oldest first."""
    scoped(caller, user_id)
    with db.read() as session:
        found = purchases.list_purchases(
            session,
            user_id=user_id,
            status=status,
            after_id=decode_cursor(cursor) or 0,
            limit=limit,
        )
    return ws.PurchasePage(
        items=[ws.purchase_out(p) for p in found],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


def _visible_purchase(
    session: Session, caller: Principal, purchase_id: int
) -> purchases.PurchaseInfo:
    found = purchases.get_purchase(session, purchase_id)
    if not caller.can_act_for(found.user_id):
        raise PurchaseNotFound(f"no purchase {purchase_id}", purchase_id=purchase_id)
    return found


@router.get("/purchases/{purchase_id}", response_model=ws.PurchaseOut)
def get_purchase(purchase_id: PathId, caller: Caller, db: DB) -> ws.PurchaseOut:
    """One purchase (its buyer, a service key or an admin)."""
    with db.read() as session:
        return ws.purchase_out(_visible_purchase(session, caller, purchase_id))


@router.get("/admin/purchases", response_model=ws.PurchasePage)
def admin_purchases(
    caller: Caller,
    db: DB,
    status: Literal["pending", "completed", "expired", "refunded", "failed"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ws.PurchasePage:
    """Every purchase, oldest first, by status (admin)."""
    caller.require_admin()
    with db.read() as session:
        found = purchases.list_purchases(
            session, status=status, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    return ws.PurchasePage(
        items=[ws.purchase_out(p) for p in found],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


@router.post("/admin/purchases/{purchase_id}/confirm", response_model=ws.PurchaseOut)
def confirm_purchase(purchase_id: PathId, key: IdemKey, caller: Caller, db: DB) -> JSONResponse:
    """Confirm a ``manual`` purchase's payment (admin): its credits are granted, once."""
    caller.require_admin()

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        found = purchases.get_purchase(session, purchase_id)
        if found.provider != "manual":
            raise PurchaseState(
                f"purchase {purchase_id} is paid through {found.provider}: it completes when"
                " the provider confirms the payment",
                status=found.status,
            )
        done, _ = purchases.complete(session, purchase_id)
        return 200, ws.purchase_out(done).model_dump(mode="json")

    return db.idempotent(caller, key, f"/admin/purchases/{purchase_id}/confirm", {}, run)


@router.post("/purchases/{purchase_id}/refund", response_model=ws.PurchaseRefundOut)
def refund_purchase(
    purchase_id: PathId,
    key: IdemKey,
    caller: Caller,
    db: DB,
    body: ws.PurchaseRefundIn | None = None,
) -> JSONResponse:
    """Reverse the unspent credits of a purchase (admin): all that is left of its grant, or
    ``amount_ucr``. The cash refund itself is made in the payment provider."""
    caller.require_admin()
    request = body or ws.PurchaseRefundIn()

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        done, reversed_ucr = purchases.refund(session, purchase_id, amount_ucr=request.amount_ucr)
        out = ws.PurchaseRefundOut(
            purchase=ws.purchase_out(done),
            reversed_ucr=reversed_ucr,
            reversed=format_credits(reversed_ucr),
        )
        return 200, out.model_dump(mode="json")

    return db.idempotent(
        caller, key, f"/purchases/{purchase_id}/refund", request.model_dump(mode="json"), run
    )


@router.post(
    "/webhooks/stripe",
    response_model=ws.StripeWebhookOut,
    responses=problem_responses(400),
)
async def stripe_webhook(request: Request, db: DB) -> ws.StripeWebhookOut:
    """Stripe's events (no API key: the ``Stripe-Signature`` header is verified against the
    endpoint secret; a bad signature is 400 and changes nothing). Deliveries are applied
    once each, in any order. Subscription events (``invoice.paid``,
    ``invoice.payment_failed``, ``customer.subscription.deleted``, subscription-mode
    checkouts) go to :mod:`modelbank.wallets.subscriptions`, the others to purchases."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature")
    stripe_billing = billing.stripe_billing(db.settings, http_client=db.payment_http_client)
    about_subscription = stripe_billing.parse_webhook(payload, signature)
    if about_subscription is not None:
        sub_event = about_subscription

        def apply_subscription() -> str:
            with db.write() as session:
                return subscription_events.apply_event(session, sub_event)

        return ws.StripeWebhookOut(result=await run_in_threadpool(apply_subscription))
    provider = providers.stripe_from_settings(db.settings, http_client=db.payment_http_client)
    event = provider.parse_webhook(payload, signature)

    def apply() -> str:
        with acting_as(Actor("stripe")), db.write() as session:
            return purchases.apply_event(session, event)

    return ws.StripeWebhookOut(result=await run_in_threadpool(apply))


# ---------------------------------------------------------------- grants


@router.get("/users/{user_id}/grants", response_model=ws.GrantPage)
def list_grants(
    user_id: PathId,
    caller: Caller,
    db: DB,
    open_only: Annotated[
        bool, Query(alias="open", description="only grants with credits left")
    ] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> ws.GrantPage:
    """The user's grants (source, cost basis, expiry, what is left), oldest first."""
    scoped(caller, user_id)
    with db.read() as session:
        found = grants.list_grants(
            session, user_id, open_only=open_only, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    now = utcnow()
    return ws.GrantPage(
        items=[ws.grant_out(g, now) for g in found],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


# ---------------------------------------------------------------- holds


def model_of(session: Session, body: ws.HoldIn | ws.CaptureIn) -> int | str | None:
    """The body's ``model``, or the id of the active model of its ``character_id``
    (:class:`~modelbank.catalog.errors.CharacterNotFound` when none)."""
    if body.character_id is not None:
        return catalog.model_for_character(session, body.character_id).id
    return body.model


def fingerprinted(body: ws.HoldIn | ws.CaptureIn) -> dict[str, Any]:
    """The body an idempotency key is bound to; ``character_id`` only when given, so keys
    stored before it existed still replay."""
    return body.model_dump(mode="json", exclude=None if body.character_id else {"character_id"})


def _visible_hold(session: Session, caller: Principal, hold_id: int) -> holds.HoldInfo:
    found = holds.get_hold(session, hold_id)
    if not caller.can_act_for(found.user_id):
        raise HoldNotFound(f"no hold {hold_id}", hold_id=hold_id)
    return found


def _resolvable_hold(session: Session, caller: Principal, hold_id: int) -> holds.HoldInfo:
    """The hold ``caller`` may capture or void: a key with a spend limit only those placed
    with it (another key's hold is not counted on its limit). Raises :class:`HoldNotFound`,
    :class:`~modelbank.auth.errors.Forbidden`."""
    found = _visible_hold(session, caller, hold_id)
    if caller.limited and found.api_key_id != caller.key_id:
        raise Forbidden("a key with a spend limit can only capture or void holds placed with it")
    return found


@router.post(
    "/users/{user_id}/holds",
    status_code=201,
    response_model=ws.HoldOut,
    responses=problem_responses(402),
)
def place_hold(
    user_id: PathId, body: ws.HoldIn, key: IdemKey, caller: Caller, db: DB
) -> JSONResponse:
    """Reserve credits for ``timeout_s`` seconds (pending); the available balance drops at
    once. Capture, void, or let it expire. A key with a spend limit reserves the hold on it
    too (402 ``key_limit_reached`` past the limit); its capture counts there."""
    scoped(caller, user_id)

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        hold = holds.place(
            session,
            user_id,
            body.amount_ucr,
            timeout_s=body.timeout_s,
            model=model_of(session, body),
            idempotency_key=f"api:{caller.scope}:{key}",
            limited_key_id=caller.limited_key_id,
        )
        return 201, ws.hold_out(hold).model_dump(mode="json")

    return db.idempotent(caller, key, f"/users/{user_id}/holds", fingerprinted(body), run)


@router.get("/users/{user_id}/holds", response_model=ws.HoldList)
def list_holds(
    user_id: PathId,
    caller: Caller,
    db: DB,
    status: Literal["pending", "posted", "voided"] | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> ws.HoldList:
    """The user's holds, oldest first."""
    scoped(caller, user_id)
    with db.read() as session:
        page = holds.list_holds(
            session, user_id, status=status, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    return ws.HoldList(
        items=[ws.hold_out(h) for h in page.items],
        next_cursor=None if page.next_after is None else encode_cursor(page.next_after),
    )


@router.get("/holds/{hold_id}", response_model=ws.HoldOut)
def get_hold(hold_id: PathId, caller: Caller, db: DB) -> ws.HoldOut:
    """One hold."""
    with db.read() as session:
        return ws.hold_out(_visible_hold(session, caller, hold_id))


@router.post(
    "/holds/{hold_id}/capture", response_model=ws.CaptureOut, responses=problem_responses(402)
)
def capture_hold(
    hold_id: PathId, body: ws.CaptureIn, key: IdemKey, caller: Caller, db: DB
) -> JSONResponse:
    """Charge ``amount_ucr`` (≤ held) as a usage event of the hold's model through the normal
    pipeline (creator earnings included) and release the rest. A second capture is 409; 403
    for a key with a spend limit and a hold placed with another key."""

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        _resolvable_hold(session, caller, hold_id)
        hold, result = capture(
            session,
            hold_id,
            body.amount_ucr,
            model=model_of(session, body),
            usage_type=body.usage_type,
            input_tokens=body.input_tokens,
            output_tokens=body.output_tokens,
            units=body.units,
            metadata=body.metadata,
        )
        return 200, ws.capture_out(hold, result).model_dump(mode="json")

    return db.idempotent(caller, key, f"/holds/{hold_id}/capture", fingerprinted(body), run)


@router.post("/holds/{hold_id}/void", response_model=ws.HoldOut)
def void_hold(hold_id: PathId, key: IdemKey, caller: Caller, db: DB) -> JSONResponse:
    """Release a pending hold entirely. 409 when it is no longer pending; 403 for a key with
    a spend limit and a hold placed with another key."""

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        _resolvable_hold(session, caller, hold_id)
        return 200, ws.hold_out(holds.void(session, hold_id)).model_dump(mode="json")

    return db.idempotent(caller, key, f"/holds/{hold_id}/void", {}, run)


# ---------------------------------------------------------------- refunds


@router.post("/usage/{usage_id}/refund", status_code=201, response_model=ws.UsageRefundOut)
def refund_usage(
    usage_id: PathId,
    key: IdemKey,
    caller: Caller,
    db: DB,
    body: ws.UsageRefundIn | None = None,
) -> JSONResponse:
    """Refund a usage charge, wholly or in part (admin): the credits return to the grants
    they came from and the creators' earnings are reversed in proportion (what was already
    paid out stays owed)."""
    caller.require_admin()
    request = body or ws.UsageRefundIn()

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        info = refunds.refund_usage(
            session, usage_id, amount_ucr=request.amount_ucr, reason=request.reason
        )
        return 201, ws.refund_out(info).model_dump(mode="json")

    return db.idempotent(
        caller, key, f"/usage/{usage_id}/refund", request.model_dump(mode="json"), run
    )


# ---------------------------------------------------------------- alerts, statement


@router.get("/users/{user_id}/low-balance", response_model=ws.LowBalanceOut)
def low_balance(user_id: PathId, caller: Caller, db: DB) -> ws.LowBalanceOut:
    """The user's low-balance threshold and whether the warning is on."""
    scoped(caller, user_id)
    with db.read() as session:
        return ws.low_balance_out(alerts.state(session, user_id))


@router.put("/users/{user_id}/low-balance", response_model=ws.LowBalanceOut)
def set_low_balance(
    user_id: PathId, body: ws.LowBalanceIn, caller: Caller, db: DB
) -> ws.LowBalanceOut:
    """Set the user's threshold (µcr; null: the platform default). A threshold above the
    available balance alerts at once."""
    scoped(caller, user_id)
    with db.write() as session:
        return ws.low_balance_out(alerts.set_threshold(session, user_id, body.threshold_ucr))


@router.put("/admin/low-balance-default", response_model=ws.DefaultThresholdOut)
def set_default_threshold(
    body: ws.DefaultThresholdIn, caller: Caller, db: DB
) -> ws.DefaultThresholdOut:
    """Set the platform's default low-balance threshold (admin)."""
    caller.require_admin()
    with db.write() as session:
        value = alerts.set_default_threshold(session, body.threshold_ucr)
    return ws.DefaultThresholdOut(threshold_ucr=value, threshold=format_credits(value))


@router.get(
    "/users/{user_id}/statement.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "the statement as CSV"}},
)
def statement(
    user_id: PathId,
    caller: Caller,
    db: DB,
    since: Annotated[Timestamp | None, Query(alias="from")] = None,
    until: Annotated[Timestamp | None, Query(alias="to")] = None,
) -> StreamingResponse:
    """The user's wallet and earnings movements in ``[from, to)``, oldest first, as CSV
    (streamed; amounts signed µcr)."""
    scoped(caller, user_id)
    chunks = statement_csv(db.read_analytics, user_id, since=since, until=until)
    name = f"statement-user-{user_id}.csv"
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
