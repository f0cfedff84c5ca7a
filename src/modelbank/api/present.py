"""Domain results → response bodies (formatting only: no decisions here)."""

from __future__ import annotations

from decimal import Decimal

from modelbank.analytics.service import ModelEarningLine
from modelbank.api import schemas as s
from modelbank.auth.service import KeyInfo, NewKey
from modelbank.catalog.service import ModelInfo
from modelbank.earnings.rules import EarningsRule
from modelbank.money import format_credits, format_usd
from modelbank.pricing.admin import PricingRow
from modelbank.pricing.service import PriceInfo


def _d(value: Decimal) -> str:
    text = format(value.normalize(), "f") if value == value.to_integral_value() else str(value)
    return text


def price(info: PriceInfo | None) -> s.PriceOut | None:
    if info is None:
        return None
    p, c = info.price_ucr, info.cost_uusd
    return s.PriceOut(
        version=info.version,
        effective_from=info.effective_from,
        source=info.source,
        input_ucr_per_mtok=_d(p.input_per_mtok),
        output_ucr_per_mtok=_d(p.output_per_mtok),
        cache_read_ucr_per_mtok=None
        if p.cache_read_per_mtok is None
        else _d(p.cache_read_per_mtok),
        per_request_ucr=_d(p.per_request),
        per_unit_ucr=_d(p.per_unit),
        input_uusd_per_mtok=_d(c.input_per_mtok),
        output_uusd_per_mtok=_d(c.output_per_mtok),
        per_request_uusd=_d(c.per_request),
        per_unit_uusd=_d(c.per_unit),
    )


def rule(r: EarningsRule | None) -> s.EarningsRuleOut | None:
    if r is None:
        return None
    return s.EarningsRuleOut(
        version=r.version,
        per_use_ucr=r.per_use_ucr,
        per_token_ucr=_d(r.per_token_ucr),
        share_bps=r.share_bps,
        popularity_tiers=[(m, _d(x)) for m, x in r.popularity_tiers],
        type_multipliers={k: _d(v) for k, v in r.type_multipliers.items()},
        other_multiplier=_d(r.other_multiplier),
    )


def model(
    info: ModelInfo,
    price_info: PriceInfo | None,
    *,
    purchased: bool = False,
    owned: bool = False,
    rule_info: EarningsRule | None = None,
) -> s.ModelOut:
    return s.ModelOut(
        id=info.id,
        slug=info.slug,
        name=info.name,
        provider=info.provider,
        provider_model_ref=info.provider_model_ref,
        mode=info.mode.value,
        category=info.category,
        tier=info.tier.value,
        demand=info.demand,
        creator_id=info.creator_id,
        is_active=info.is_active,
        is_premium=info.is_premium,
        access_price_ucr=info.access_price_ucr,
        access_price=format_credits(info.access_price_ucr),
        character_id=info.character_id,
        price=price(price_info),
        purchased=purchased,
        owned=owned,
        earnings_rule=rule(rule_info),
    )


def key(new: NewKey) -> s.KeyOut:
    return s.KeyOut(
        id=new.id,
        role=new.role.value,
        user_id=new.user_id,
        name=new.name,
        prefix=new.prefix,
        key=new.secret,
        created_at=new.created_at,
        limit_ucr=new.limit_ucr,
        limit_period=None if new.limit_period is None else new.limit_period.value,
    )


def key_info(info: KeyInfo) -> s.KeyInfoOut:
    usage = info.usage
    return s.KeyInfoOut(
        id=info.id,
        role=info.role.value,
        user_id=info.user_id,
        name=info.name,
        prefix=info.prefix,
        created_at=info.created_at,
        revoked_at=info.revoked_at,
        limit=None
        if usage is None
        else s.KeyLimitOut(
            limit_ucr=usage.limit_ucr,
            limit=format_credits(usage.limit_ucr),
            period=usage.period.value,
            spent_ucr=usage.spent_ucr,
            spent=format_credits(usage.spent_ucr),
            reserved_ucr=usage.reserved_ucr,
            left_ucr=usage.left_ucr,
            left=format_credits(usage.left_ucr),
            resets_at=usage.resets_at,
        ),
    )


def earning_line(line: ModelEarningLine) -> s.ModelEarningOut:
    return s.ModelEarningOut(
        model_id=line.model_id,
        name=line.name,
        uses=line.uses,
        tokens=line.tokens,
        earnings_ucr=line.earnings_ucr,
        earnings=format_credits(line.earnings_ucr),
        last_used_at=line.last_used_at,
    )


def pricing_row(row: PricingRow) -> s.PricingRowOut:
    m = row.model
    return s.PricingRowOut(
        model_id=m.id,
        slug=m.slug,
        name=m.name,
        mode=m.mode.value,
        category=m.category,
        tier=m.tier.value,
        demand=m.demand,
        is_active=m.is_active,
        is_premium=m.is_premium,
        price=price(row.price),
        markup=None if row.markup is None else _d(row.markup),
        margin_bps=row.margin_bps,
    )


__all__ = ["earning_line", "format_credits", "format_usd", "model", "price", "pricing_row"]
