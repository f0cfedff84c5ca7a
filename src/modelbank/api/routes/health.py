"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from modelbank.api.deps import DB
from modelbank.db.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database unreachable or behind"}})
def readyz(db: DB) -> JSONResponse:
    """The database answers and is at the newest schema revision."""
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
        current, head = current_revision(db.engine), head_revision()
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "detail": str(exc)[:200]}, status_code=503)
    if current != head:
        return JSONResponse(
            {"status": "migrations_pending", "current": current, "head": head}, status_code=503
        )
    return JSONResponse({"status": "ok", "revision": current})
