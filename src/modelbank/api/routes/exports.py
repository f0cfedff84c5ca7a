"""CSV exports over HTTP (DESIGN §8): usage, transfers, earnings and payouts, streamed. Thin:
the rows and their scopes are :mod:`modelbank.analytics.exports`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from modelbank.analytics.exports import ExportKind, export_csv
from modelbank.api.deps import DB, Caller, scoped
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.api.schemas import MAX_ID, Timestamp
from modelbank.auth.errors import Forbidden
from modelbank.auth.service import Principal

router = APIRouter(
    prefix="/api/v1", tags=["exports"], responses=problem_responses(*COMMON_PROBLEMS)
)


def export_scope(caller: Principal, user_id: int | None) -> int | None:
    """Whose rows the caller may export: ``user_id`` if it may act for that user (else 404,
    as for a user that does not exist); without one, a user key's own rows, everything for
    an admin, and 403 for a service key (it acts for one named user at a time)."""
    if user_id is not None:
        return scoped(caller, user_id)
    if caller.is_admin:
        return None
    if caller.user_id is not None:
        return caller.user_id
    raise Forbidden(
        "exporting every user's rows needs an admin key: pass user_id", role=caller.role.value
    )


@router.get(
    "/exports/{kind}.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "the rows as CSV"}},
)
def export(
    kind: ExportKind,
    caller: Caller,
    db: DB,
    user_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_ID, description="whose rows (default: the key's user; all: admin)"),
    ] = None,
    since: Annotated[Timestamp | None, Query(alias="from")] = None,
    until: Annotated[Timestamp | None, Query(alias="to")] = None,
) -> StreamingResponse:
    """Usage events, transfers, earnings or payouts created in ``[from, to)``, in id order,
    as CSV streamed page by page (amounts integers: ``*_ucr`` µcr, ``*_uusd`` µUSD). Scope:
    one user (usage: theirs; transfers: touching their wallet or earnings account; earnings:
    where they are the beneficiary; payouts: theirs), or every user for an admin without
    ``user_id``."""
    scope = export_scope(caller, user_id)
    chunks = export_csv(db.read_analytics, kind, user_id=scope, since=since, until=until)
    name = f"{kind.value}-{'all' if scope is None else f'user-{scope}'}.csv"
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
