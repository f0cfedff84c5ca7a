"""Admin — the audit log (issue 16 part 3): every state-changing admin and service action,
newest first, filtered by actor, action and day range, with a CSV export of the same
filter. Reads only (:mod:`modelbank.audit.service`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response, StreamingResponse

from modelbank.audit import service as audit
from modelbank.web import views
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, state_of

router = APIRouter(prefix="/admin", include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]

PAGE = 100
"""Records per page."""
ACTOR_KINDS = ("", "admin", "service", "user", "cli", "stripe", "system")


def _filter(
    actor_kind: Annotated[str, Query(max_length=16)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[date | None, Query(alias="from")] = None,
    until: Annotated[date | None, Query(alias="to")] = None,
) -> audit.AuditFilter:
    """The page's filters: ``to`` is a day included whole."""

    def start(day: date | None) -> datetime | None:
        return None if day is None else datetime.combine(day, time(), tzinfo=UTC)

    end = start(until)
    return audit.AuditFilter(
        actor_kind=actor_kind or None,
        action=action or None,
        since=start(since),
        until=None if end is None else end + timedelta(days=1),
    )


Filter = Annotated[audit.AuditFilter, Depends(_filter)]


@router.get("/audit")
def audit_page(
    request: Request,
    viewer: SignedIn,
    where: Filter,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """The newest :data:`PAGE` records matching the filters (older ones: "More")."""
    viewer.principal.require_admin()
    with state_of(request).db.read() as session:
        rows, more = audit.page(session, where, before_id=before, limit=PAGE)
    params = dict(request.query_params)
    params.pop("before", None)
    return render(
        request,
        "admin_audit.html",
        viewer,
        {
            "records": rows,
            "kinds": ACTOR_KINDS,
            "filters": params,
            "csv": "/app/admin/audit.csv" + views.query_string(params),
            "next_page": None
            if more is None
            else request.url.path + views.query_string(params, before=more),
        },
    )


@router.get("/audit.csv")
def audit_csv(request: Request, viewer: SignedIn, where: Filter) -> Response:
    """The records matching the filters as CSV, oldest first (streamed)."""
    viewer.principal.require_admin()
    db = state_of(request).db

    def chunks() -> Iterator[str]:
        with db.read() as session:
            yield from audit.csv_lines(audit.export_rows(session, where))

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
    )
