"""The creator economy over HTTP (DESIGN §7): ownership stakes and their listings, earnings
rule versions, the monetisation switches, and one usage event's earnings explained. Thin:
every rule is in :mod:`modelbank.earnings` (and :mod:`modelbank.catalog.manage`; the
explanation reads the usage row, in :mod:`modelbank.analytics.explain`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelbank.analytics.explain import explain_usage
from modelbank.api import stake_schemas as ss
from modelbank.api.deps import DB, Caller, IdemKey, PathId, decode_cursor, encode_cursor, scoped
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.api.routes.models import rule_of
from modelbank.auth.service import Principal
from modelbank.catalog import manage
from modelbank.catalog import service as catalog
from modelbank.earnings import explain, stakes
from modelbank.earnings import service as earnings
from modelbank.errors import InvalidInput

router = APIRouter(
    prefix="/api/v1", tags=["creator economy"], responses=problem_responses(*COMMON_PROBLEMS)
)

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the last page")]


def _acting_user(caller: Principal, named: int | None, field: str) -> int:
    """The user a call acts for: a user key for itself (naming another user is a 404), an
    admin or service key for the user it names in ``field``."""
    if caller.user_id is not None:
        return scoped(caller, named) if named is not None else caller.user_id
    if named is None:
        raise InvalidInput(f"{field} is required with an admin or service key")
    return named


def _stakes_out(session: Session, model_id: int) -> ss.StakesOut:
    return ss.stakes_out(
        model_id, stakes.get_stakes(session, model_id), stakes.listed_bps(session, model_id)
    )


# ---------------------------------------------------------------- stakes


@router.get("/models/{model_id}/stakes", response_model=ss.StakesOut)
def get_stakes(model_id: PathId, caller: Caller, db: DB) -> ss.StakesOut:
    """Who earns from the model and how much of it (any key): basis points summing to
    10,000, the creator at 10,000 until stakes are set or sold, and what is listed."""
    with db.read() as session:
        return _stakes_out(session, model_id)


@router.post("/models/{model_id}/stakes", response_model=ss.StakesOut)
def set_stakes(model_id: PathId, body: ss.StakesIn, caller: Caller, db: DB) -> ss.StakesOut:
    """Replace the model's stakes (admin). Open listings no longer covered by their seller's
    new stake are cancelled. Later usage splits its earnings by the new stakes."""
    caller.require_admin()
    with db.write() as session:
        stakes.set_stakes(session, model_id, [(s.user_id, s.share_bps) for s in body.stakes])
        return _stakes_out(session, model_id)


@router.get("/models/{model_id}/stakes/listings", response_model=ss.ListingPage)
def list_listings(
    model_id: PathId, caller: Caller, db: DB, limit: Limit = 100, cursor: Cursor = None
) -> ss.ListingPage:
    """The model's open stake listings, oldest first (any key)."""
    with db.read() as session:
        found = stakes.list_listings(
            session, model_id, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    return ss.ListingPage(
        items=[ss.listing_out(x) for x in found],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


@router.post("/models/{model_id}/stakes/listings", status_code=201, response_model=ss.ListingOut)
def create_listing(model_id: PathId, body: ss.ListingIn, caller: Caller, db: DB) -> ss.ListingOut:
    """Offer part of a stake for credits: a user key for itself, an admin or service key for
    ``seller_id``. The seller must hold the share beyond their open listings (422
    ``stake_unavailable``); 403 for a key with a spend limit."""
    caller.require_wallet_spender()
    seller = _acting_user(caller, body.seller_id, "seller_id")
    with db.write() as session:
        return ss.listing_out(
            stakes.create_listing(session, model_id, seller, body.share_bps, body.price_ucr)
        )


@router.post(
    "/models/{model_id}/stakes/listings/{listing_id}/buy",
    response_model=ss.SaleOut,
    responses=problem_responses(402),
)
def buy_listing(
    model_id: PathId,
    listing_id: PathId,
    key: IdemKey,
    caller: Caller,
    db: DB,
    body: ss.BuyIn | None = None,
) -> JSONResponse:
    """Buy an open listing: a user key for itself, an admin or service key for ``buyer_id``.
    The price moves from the buyer's wallet to the seller's and the stake from seller to
    buyer, together; 402 (nothing written) without the credits, 409
    ``stake_listing_state`` once it is sold or cancelled, 422 ``own_stake_listing`` for its
    seller; 403 for a key with a spend limit."""
    caller.require_wallet_spender()
    request = body or ss.BuyIn()
    buyer = _acting_user(caller, request.buyer_id, "buyer_id")

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        sold = stakes.buy_listing(session, listing_id, buyer, model_id=model_id)
        out = ss.SaleOut(listing=ss.listing_out(sold), stakes=_stakes_out(session, model_id))
        return 200, out.model_dump(mode="json")

    return db.idempotent(
        caller,
        key,
        f"/models/{model_id}/stakes/listings/{listing_id}/buy",
        {"buyer_id": buyer},
        run,
    )


@router.post("/models/{model_id}/stakes/listings/{listing_id}/cancel", response_model=ss.ListingOut)
def cancel_listing(model_id: PathId, listing_id: PathId, caller: Caller, db: DB) -> ss.ListingOut:
    """Withdraw an open listing: its seller's key, or an admin or service key."""
    with db.write() as session:
        return ss.listing_out(
            stakes.cancel_listing(session, listing_id, model_id=model_id, seller_id=caller.user_id)
        )


# ---------------------------------------------------------------- earnings rules


def _history(session: Session, model_id: int) -> ss.RuleHistoryOut:
    return ss.RuleHistoryOut(
        model_id=model_id,
        current=ss.rule_version_out(explain.current_rule(session, model_id)),
        versions=[ss.rule_version_out(v) for v in explain.rule_history(session, model_id)],
    )


@router.get("/models/{model_id}/earnings-rule", response_model=ss.RuleHistoryOut)
def get_earnings_rule(model_id: PathId, caller: Caller, db: DB) -> ss.RuleHistoryOut:
    """The model's earnings rule in force (version 0: the DESIGN §7 defaults) and every
    stored version (any key)."""
    with db.read() as session:
        return _history(session, model_id)


@router.put("/models/{model_id}/earnings-rule", response_model=ss.RuleHistoryOut)
def put_earnings_rule(
    model_id: PathId, body: ss.EarningsRulePut, caller: Caller, db: DB
) -> ss.RuleHistoryOut:
    """A new version of the model's earnings rule (admin), from ``effective_from`` (now when
    omitted): ``(per_use + tokens × per_token + share_bps × charge / 10000) × popularity ×
    type``; omitted parts take the DESIGN §7 defaults. Each earning records its version."""
    caller.require_admin()
    with db.write() as session:
        explain.change_rule(session, model_id, rule_of(body), effective_from=body.effective_from)
        return _history(session, model_id)


# ---------------------------------------------------------------- monetisation


@router.get("/models/{model_id}/monetisation", response_model=ss.ModelMonetisationOut)
def get_model_monetisation(model_id: PathId, caller: Caller, db: DB) -> ss.ModelMonetisationOut:
    """Whether the model's usage earns its beneficiaries (any key): its own switch and the
    platform's."""
    with db.read() as session:
        return ss.model_monetisation_out(
            catalog.get_model(session, model_id), earnings.platform_monetised(session)
        )


@router.put("/models/{model_id}/monetisation", response_model=ss.ModelMonetisationOut)
def put_model_monetisation(
    model_id: PathId, body: ss.MonetisationIn, caller: Caller, db: DB
) -> ss.ModelMonetisationOut:
    """Switch the model's monetisation (admin). Off: usage is still charged but earns
    nothing (the usage row's ``earnings_note`` is ``monetisation_off``)."""
    caller.require_admin()
    with db.write() as session:
        return ss.model_monetisation_out(
            manage.set_monetised(session, model_id, body.enabled),
            earnings.platform_monetised(session),
        )


@router.get("/admin/monetisation", response_model=ss.PlatformMonetisationOut)
def get_platform_monetisation(caller: Caller, db: DB) -> ss.PlatformMonetisationOut:
    """The platform-wide monetisation switch (admin)."""
    caller.require_admin()
    with db.read() as session:
        return ss.PlatformMonetisationOut(enabled=earnings.platform_monetised(session))


@router.put("/admin/monetisation", response_model=ss.PlatformMonetisationOut)
def put_platform_monetisation(
    body: ss.MonetisationIn, caller: Caller, db: DB
) -> ss.PlatformMonetisationOut:
    """Switch monetisation for every model (admin). Off: usage is still charged but earns
    nothing (``earnings_note`` ``monetisation_off_platform``)."""
    caller.require_admin()
    with db.write() as session:
        return ss.PlatformMonetisationOut(
            enabled=earnings.set_platform_monetised(session, body.enabled)
        )


# ---------------------------------------------------------------- why


@router.get("/usage/{usage_id}/earnings", response_model=ss.UsageEarningsOut)
def usage_earnings(usage_id: PathId, caller: Caller, db: DB) -> ss.UsageEarningsOut:
    """What one usage event earned and why: the charge, ``earnings_note`` when nothing was
    earned, each earning with its rule version, multipliers and stake, the rule of that
    version and the payer's burned grants. Visible to the payer, the beneficiaries it paid
    (without the payer's id and grants), admin and service keys; 404 for anyone else."""
    with db.read() as session:
        return ss.usage_earnings_out(explain_usage(session, usage_id, viewer=caller.user_id))
