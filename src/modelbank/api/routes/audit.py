"""The admin audit log over HTTP (issue 16 part 3): filtered pages and a CSV export (admin
only). Thin: the records, filters and CSV are :mod:`modelbank.audit.service`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from modelbank.api.audit_schemas import AuditPage, AuditRecordOut
from modelbank.api.deps import DB, Caller, decode_cursor, encode_cursor
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.api.schemas import MAX_ID, NO_NUL, Timestamp
from modelbank.audit import service as audit

router = APIRouter(
    prefix="/api/v1/admin", tags=["audit"], responses=problem_responses(*COMMON_PROBLEMS)
)


def audit_filter(
    actor_kind: Annotated[
        str | None,
        Query(max_length=16, pattern=NO_NUL, description="admin, service, user, cli, stripe"),
    ] = None,
    actor_key_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    actor_user_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    action: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=NO_NUL,
            description="an action (price.set) or a prefix ending in a dot (payout.)",
        ),
    ] = None,
    target_type: Annotated[str | None, Query(max_length=32, pattern=NO_NUL)] = None,
    target_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    since: Annotated[Timestamp | None, Query(alias="from")] = None,
    until: Annotated[Timestamp | None, Query(alias="to")] = None,
) -> audit.AuditFilter:
    """The query's filters: actor, action, target, ``occurred_at`` in ``[from, to)``."""
    return audit.AuditFilter(
        actor_kind, actor_key_id, actor_user_id, action, target_type, target_id, since, until
    )


Filter = Annotated[audit.AuditFilter, Depends(audit_filter)]


@router.get("/audit", response_model=AuditPage)
def list_audit(
    where: Filter,
    caller: Caller,
    db: DB,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE, description="page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the last page")
    ] = None,
) -> AuditPage:
    """Audit records (admin), newest first, filtered by actor, action, target and time."""
    caller.require_admin()
    with db.read() as session:
        rows, more = audit.page(session, where, before_id=decode_cursor(cursor), limit=limit)
    return AuditPage(
        items=[AuditRecordOut.model_validate(row) for row in rows],
        next_cursor=None if more is None else encode_cursor(more),
    )


@router.get(
    "/audit.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "the records as CSV"}},
)
def export_audit(where: Filter, caller: Caller, db: DB) -> StreamingResponse:
    """The audit records matching the filters as CSV (admin), oldest first, streamed;
    ``before`` and ``after`` as JSON text."""
    caller.require_admin()

    def chunks() -> Iterator[str]:
        with db.read() as session:
            yield from audit.csv_lines(audit.export_rows(session, where))

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
    )
