"""Subscription plans: credits per period for a price per period (issue 13). Admin-editable
data, like credit packages (:mod:`modelbank.wallets.packages`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from modelbank.audit import service as audit
from modelbank.db.base import utcnow
from modelbank.errors import InvalidInput
from modelbank.wallets.billing_errors import PlanNotFound
from modelbank.wallets.billing_models import plans_table as plans
from modelbank.wallets.grants import BPS
from modelbank.wallets.packages import UUSD_PER_CENT

INTERVALS = ("month",)
"""Billing intervals a plan may have (one calendar month: Stripe's ``interval=month``)."""

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True, slots=True)
class PlanInfo:
    """A plan: ``credits_ucr`` µcr each period for ``price_uusd`` µUSD (whole cents);
    ``rollover_bps`` (0–10,000) of a period's unspent credits roll into the next period;
    ``first_period_bonus_ucr`` free credits with the first period."""

    id: int
    slug: str
    name: str
    price_uusd: int
    credits_ucr: int
    rollover_bps: int
    first_period_bonus_ucr: int
    currency: str
    interval: str
    is_active: bool
    sort_order: int
    created_at: datetime
    updated_at: datetime

    @property
    def price_cents(self) -> int:
        return self.price_uusd // UUSD_PER_CENT


def _info(row: Any) -> PlanInfo:
    return PlanInfo(
        id=int(row.id),
        slug=row.slug,
        name=row.name,
        price_uusd=int(row.price_uusd),
        credits_ucr=int(row.credits_ucr),
        rollover_bps=int(row.rollover_bps),
        first_period_bonus_ucr=int(row.first_period_bonus_ucr),
        currency=row.currency,
        interval=row.interval,
        is_active=bool(row.is_active),
        sort_order=int(row.sort_order),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def list_plans(session: Session, *, include_inactive: bool = False) -> list[PlanInfo]:
    """Plans in display order (``sort_order``, then id); inactive ones only when asked."""
    query = select(plans)
    if not include_inactive:
        query = query.where(plans.c.is_active.is_(True))
    rows = session.connection().execute(query.order_by(plans.c.sort_order, plans.c.id))
    return [_info(row) for row in rows]


def get_plan(session: Session, plan_id: int) -> PlanInfo:
    """The plan ``plan_id``. Raises :class:`PlanNotFound`."""
    row = session.connection().execute(select(plans).where(plans.c.id == plan_id)).first()
    if row is None:
        raise PlanNotFound(f"no plan {plan_id}", plan_id=plan_id)
    return _info(row)


def _check(values: dict[str, Any]) -> None:
    for name in ("credits_ucr", "price_uusd"):
        if name in values and values[name] <= 0:
            raise InvalidInput(f"{name} must be positive")
    if "price_uusd" in values and values["price_uusd"] % UUSD_PER_CENT:
        raise InvalidInput("price_uusd must be a whole number of cents (multiple of 10,000)")
    if "rollover_bps" in values and not 0 <= values["rollover_bps"] <= BPS:
        raise InvalidInput("rollover_bps must be 0–10000 (basis points of the unspent credits)")
    if values.get("first_period_bonus_ucr", 0) < 0:
        raise InvalidInput("first_period_bonus_ucr cannot be negative")
    if "slug" in values and not _SLUG.match(values["slug"]):
        raise InvalidInput("slug must be 1–64 of a-z, 0-9, - and _, starting alphanumeric")
    if "interval" in values and values["interval"] not in INTERVALS:
        raise InvalidInput(f"interval must be one of {', '.join(INTERVALS)}")


def create_plan(
    session: Session,
    *,
    slug: str,
    name: str,
    price_uusd: int,
    credits_ucr: int,
    rollover_bps: int = 0,
    first_period_bonus_ucr: int = 0,
    currency: str = "usd",
    interval: str = "month",
    sort_order: int = 0,
) -> PlanInfo:
    """Add a plan (active). Raises :class:`InvalidInput` (non-positive amounts, a price that
    is not whole cents, a rollover outside 0–10,000 bps, a bad or taken slug)."""
    values: dict[str, Any] = {
        "slug": slug,
        "name": name,
        "price_uusd": price_uusd,
        "credits_ucr": credits_ucr,
        "rollover_bps": rollover_bps,
        "first_period_bonus_ucr": first_period_bonus_ucr,
        "currency": currency.lower(),
        "interval": interval,
        "sort_order": sort_order,
    }
    _check(values)
    conn = session.connection()
    if conn.execute(select(plans.c.id).where(plans.c.slug == slug)).first():
        raise InvalidInput(f"a plan with slug {slug!r} exists", slug=slug)
    now = utcnow()
    new_id = conn.execute(
        insert(plans).returning(plans.c.id),
        {**values, "is_active": True, "created_at": now, "updated_at": now},
    ).scalar_one()
    created = get_plan(session, int(new_id))
    audit.record(session, "plan.create", "plan", created.id, after=created)
    return created


def update_plan(session: Session, plan_id: int, **changes: Any) -> PlanInfo:
    """Change a plan's ``name``, ``price_uusd``, ``credits_ucr``, ``rollover_bps``,
    ``first_period_bonus_ucr``, ``is_active`` or ``sort_order`` (None values are ignored).
    Periods already paid keep their amounts; later periods use the new ones. Raises
    :class:`PlanNotFound`, :class:`InvalidInput`."""
    allowed = {
        "name",
        "price_uusd",
        "credits_ucr",
        "rollover_bps",
        "first_period_bonus_ucr",
        "is_active",
        "sort_order",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"cannot change {sorted(unknown)}")
    values = {k: v for k, v in changes.items() if v is not None}
    _check(values)
    before = get_plan(session, plan_id)
    if not values:
        return before
    values["updated_at"] = utcnow()
    session.connection().execute(update(plans).where(plans.c.id == plan_id).values(**values))
    after = get_plan(session, plan_id)
    audit.record(session, "plan.update", "plan", plan_id, before=before, after=after)
    return after
