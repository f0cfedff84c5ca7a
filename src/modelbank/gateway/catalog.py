"""``GET /v1/models``: the models a caller can reach through the gateway, with their prices
(DESIGN §9): active catalog models that at least one active pool resource serves.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelbank.catalog import access
from modelbank.catalog.models import models_table
from modelbank.db.base import utcnow
from modelbank.metering import reference
from modelbank.pool.models import resource_models_table, resources_table


def _number(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def visible_models(session: Session, user_id: int) -> list[dict[str, Any]]:
    """OpenAI ``model`` objects (``id`` = the catalog slug) of the models served by an active
    resource, each with a ``pricing`` object in µcr (per 1M input/output/cached tokens as
    decimal strings, per request, per image) and whether premium access is still needed."""
    served = (
        session.execute(
            select(models_table.c.id)
            .join(resource_models_table, resource_models_table.c.model_id == models_table.c.id)
            .join(resources_table, resources_table.c.id == resource_models_table.c.resource_id)
            .where(models_table.c.is_active.is_(True), resources_table.c.status == "active")
            .distinct()
            .order_by(models_table.c.id)
        )
        .scalars()
        .all()
    )
    if not served:
        return []
    ids = [int(model_id) for model_id in served]
    snap = reference.snapshot(session, ids)
    found = snap.resolve(ids)
    allowed = access.accessible(session, user_id, ids)
    now = utcnow()
    listed: list[dict[str, Any]] = []
    for model_id in ids:
        info = found.get(model_id)
        card = None if info is None else snap.models[model_id].card_at(now)
        if info is None or card is None:
            continue
        rates = card.info.price_ucr
        listed.append(
            {
                "id": info.slug,
                "object": "model",
                "created": 0,
                "owned_by": info.provider,
                "modelbank": {
                    "name": info.name,
                    "mode": str(info.mode),
                    "category": info.category,
                    "premium": info.is_premium,
                    "access_required": info.is_premium and model_id not in allowed,
                    "pricing_ucr": {
                        "input_per_mtok": _number(rates.input_per_mtok),
                        "output_per_mtok": _number(rates.output_per_mtok),
                        "cached_input_per_mtok": _number(rates.cache_read_per_mtok),
                        "per_request": _number(rates.per_request),
                        "per_image": _number(rates.per_unit),
                    },
                },
            }
        )
    return listed
