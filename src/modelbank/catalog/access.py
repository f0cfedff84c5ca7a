"""Access to premium models: who may be charged for which (DESIGN §4, issue "HTTP API").

A premium model may be charged for only when the user bought access or created it. These
are the read checks; buying access (it burns wallet grants) lives in
:mod:`modelbank.wallets.access`.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from modelbank.catalog.errors import AccessRequired
from modelbank.catalog.models import model_access_table as access
from modelbank.catalog.service import ModelInfo

_ACCESS_OF_USERS = select(access.c.user_id, access.c.model_id).where(
    access.c.user_id.in_(bindparam("users", expanding=True)),
    access.c.model_id.in_(bindparam("models", expanding=True)),
)


def accessible(session: Session, user_id: int, model_ids: Iterable[int]) -> set[int]:
    """The models among ``model_ids`` to which ``user_id`` bought access."""
    ids = list(set(model_ids))
    if not ids:
        return set()
    rows = session.connection().execute(_ACCESS_OF_USERS, {"users": [user_id], "models": ids})
    return {int(r.model_id) for r in rows}


def missing_access(session: Session, uses: Iterable[tuple[int, ModelInfo]]) -> set[tuple[int, int]]:
    """``(user_id, model_id)`` pairs among ``uses`` that need access and lack it: premium
    models used by someone other than their creator without a purchase. One query."""
    wanted = {
        (user_id, model.id)
        for user_id, model in uses
        if model.is_premium and model.creator_id != user_id
    }
    if not wanted:
        return set()
    rows = session.connection().execute(
        _ACCESS_OF_USERS,
        {"users": sorted({u for u, _ in wanted}), "models": sorted({m for _, m in wanted})},
    )
    have = {(int(r.user_id), int(r.model_id)) for r in rows}
    return wanted - have


def require_access(session: Session, user_id: int, model: ModelInfo) -> None:
    """Raise :class:`AccessRequired` unless ``user_id`` may use ``model``."""
    if missing_access(session, [(user_id, model)]):
        raise AccessRequired(
            f"model {model.slug!r} is premium: buy access first",
            model_id=model.id,
            access_price_ucr=model.access_price_ucr,
        )
