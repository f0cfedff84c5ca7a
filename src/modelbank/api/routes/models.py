"""The model catalog: list, create, edit (new price / rule versions), deactivate, buy access."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelbank import onboarding
from modelbank.api import present
from modelbank.api import schemas as s
from modelbank.api.deps import DB, Caller, IdemKey, PathId, decode_cursor, encode_cursor, scoped
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.catalog import access, manage
from modelbank.catalog import service as catalog
from modelbank.catalog.costs import Mode
from modelbank.catalog.errors import ModelNotFound
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import EarningsRule
from modelbank.errors import InvalidInput
from modelbank.money import format_credits
from modelbank.pricing import service as pricing
from modelbank.pricing.formulas import Rates
from modelbank.wallets import service as wallets
from modelbank.wallets.access import purchase_access

router = APIRouter(
    prefix="/api/v1",
    tags=["models"],
    responses=problem_responses(*COMMON_PROBLEMS, 402),
)


def price_rates(body: s.PriceIn) -> Rates:
    return Rates(
        input_per_mtok=body.input_ucr_per_mtok,
        output_per_mtok=body.output_ucr_per_mtok,
        cache_read_per_mtok=body.cache_read_ucr_per_mtok,
        per_request=body.per_request_ucr,
        per_unit=body.per_unit_ucr,
    )


def cost_rates(body: s.CostIn) -> Rates:
    return Rates(
        input_per_mtok=body.input_uusd_per_mtok,
        output_per_mtok=body.output_uusd_per_mtok,
        cache_read_per_mtok=body.cache_read_uusd_per_mtok,
        per_request=body.per_request_uusd,
        per_unit=body.per_unit_uusd,
    )


def rule_of(body: s.EarningsRuleIn) -> EarningsRule:
    return earnings.build_rule(
        per_use_ucr=body.per_use_ucr,
        per_token_ucr=body.per_token_ucr,
        share_bps=body.share_bps,
        popularity_tiers=body.popularity_tiers,
        type_multipliers=body.type_multipliers,
    )


def _settings_markups(db: DB) -> pricing.Markups:
    return pricing.Markups(credits_per_usd=db.settings.credits_per_usd)


@router.get("/models", response_model=s.ModelPage)
def list_models(
    caller: Caller,
    db: DB,
    category: Annotated[str | None, Query(max_length=64, pattern=s.NO_NUL)] = None,
    mode: Mode | None = None,
    premium: bool | None = None,
    search: Annotated[str | None, Query(max_length=200, pattern=s.NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=s.NO_NUL)] = None,
) -> s.ModelPage:
    """Active models with their price in force; ``purchased`` / ``owned`` are the caller's
    (always false for admin and service keys)."""
    with db.read() as session:
        found = manage.list_models(
            session,
            category=category,
            mode=mode,
            premium=premium,
            search=search,
            after_id=decode_cursor(cursor) or 0,
            limit=limit,
        )
        prices = pricing.current_prices(session, [m.id for m in found])
        bought = (
            access.accessible(session, caller.user_id, [m.id for m in found])
            if caller.user_id is not None
            else set()
        )
    return s.ModelPage(
        items=[
            present.model(
                m,
                prices.get(m.id),
                purchased=m.id in bought,
                owned=caller.user_id is not None and m.creator_id == caller.user_id,
            )
            for m in found
        ],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


@router.get("/models/{model_id}", response_model=s.ModelOut)
def get_model(model_id: PathId, caller: Caller, db: DB) -> s.ModelOut:
    """One model (inactive ones only for admins)."""
    with db.read() as session:
        info = catalog.get_model(session, model_id)
        if not info.is_active and not caller.is_admin:
            raise ModelNotFound(f"no model {model_id}", model=model_id)
        price = pricing.current_prices(session, [model_id]).get(model_id)
        bought = (
            access.accessible(session, caller.user_id, [model_id])
            if caller.user_id is not None
            else set()
        )
    return present.model(
        info,
        price,
        purchased=model_id in bought,
        owned=caller.user_id is not None and info.creator_id == caller.user_id,
    )


@router.post("/models", status_code=201, response_model=s.ModelOut)
def create_model(body: s.ModelIn, caller: Caller, db: DB) -> s.ModelOut:
    """Add a model (admin): priced from ``price`` when given, else from ``cost`` or the
    provider cost genai-prices knows for ``provider_model_ref``, with tier and demand
    markups (DESIGN §4). Models with a creator get an earnings rule (DESIGN §7 defaults
    for what ``earnings_rule`` omits)."""
    caller.require_admin()
    setup = onboarding.ModelSetup(
        model=catalog.NewModel(
            slug=body.slug,
            name=body.name,
            provider=body.provider,
            provider_model_ref=body.provider_model_ref,
            mode=body.mode,
            category=body.category,
            tier=body.tier,
            demand=body.demand,
            creator_id=body.creator_id,
            is_premium=body.is_premium,
            access_price_ucr=body.access_price_ucr,
            character_id=body.character_id,
        ),
        explicit_ucr=price_rates(body.price) if body.price else None,
        cost_uusd=cost_rates(body.cost) if body.cost else None,
        rule=rule_of(body.earnings_rule) if body.earnings_rule else None,
    )
    with db.write() as session:
        made = onboarding.add_model(session, setup, markups=_settings_markups(db))
    return present.model(made.model, made.price, rule_info=made.rule)


@router.patch("/models/{model_id}", response_model=s.ModelOut)
def edit_model(model_id: PathId, body: s.ModelPatch, caller: Caller, db: DB) -> s.ModelOut:
    """Edit a model (admin). ``price`` makes a new explicit price version and
    ``earnings_rule`` a new rule version; history is kept. ``character_id`` links the model
    to a character (409 ``character_in_use`` when another active model has it, also on
    reactivation); an explicit ``null`` unlinks it."""
    caller.require_admin()
    unlink = "character_id" in body.model_fields_set and body.character_id is None
    with db.write() as session:
        info = manage.update_model(
            session,
            model_id,
            manage.ModelChanges(
                name=body.name,
                category=body.category,
                tier=body.tier,
                demand=body.demand,
                is_premium=body.is_premium,
                access_price_ucr=body.access_price_ucr,
                is_active=body.is_active,
                character_id=body.character_id,
                unlink_character=unlink,
            ),
        )
        price = (
            onboarding.reprice(
                session, model_id, price_rates(body.price), markups=_settings_markups(db)
            )
            if body.price
            else pricing.current_prices(session, [model_id]).get(model_id)
        )
        rule = (
            earnings.set_rule(session, model_id, rule_of(body.earnings_rule))
            if body.earnings_rule
            else None
        )
    return present.model(info, price, rule_info=rule)


@router.delete("/models/{model_id}", response_model=s.ModelOut)
def deactivate_model(model_id: PathId, caller: Caller, db: DB) -> s.ModelOut:
    """Deactivate a model (admin): it can no longer be used; its history stays."""
    caller.require_admin()
    with db.write() as session:
        info = manage.deactivate_model(session, model_id)
        price = pricing.current_prices(session, [model_id]).get(model_id)
    return present.model(info, price)


@router.post("/models/{model_id}/purchase", status_code=201, response_model=s.AccessOut)
def purchase(
    model_id: PathId, key: IdemKey, caller: Caller, db: DB, body: s.PurchaseIn | None = None
) -> JSONResponse:
    """Buy access to a premium model with credits: a user for itself, an admin or service
    key for ``user_id``. Buying again returns the first purchase and charges nothing. 403
    for a key with a spend limit."""
    caller.require_wallet_spender()
    body = body or s.PurchaseIn()
    if caller.user_id is not None:
        if body.user_id not in (None, caller.user_id):
            scoped(caller, body.user_id)
        buyer = caller.user_id
    elif body.user_id is None:
        raise InvalidInput("user_id is required with an admin or service key")
    else:
        buyer = body.user_id

    def run(session: Session) -> tuple[int, dict[str, object]]:
        bought = purchase_access(session, buyer, model_id)
        balance = wallets.balance(session, buyer)
        out = s.AccessOut(
            user_id=buyer,
            model_id=model_id,
            price_ucr=bought.price_ucr,
            price=format_credits(bought.price_ucr),
            transfer_id=bought.transfer_id,
            purchased_at=bought.created_at,
            balance_ucr=balance.balance_ucr,
            balance=format_credits(balance.balance_ucr),
        )
        return 201, out.model_dump(mode="json")

    return db.idempotent(caller, key, f"/models/{model_id}/purchase", {"user_id": buyer}, run)
