"""Admin: the price what-if over recorded usage (DESIGN §4, §8; issue 12 item 3)."""

from __future__ import annotations

from fastapi import APIRouter

from modelbank.analytics import whatif
from modelbank.api import whatif_schemas as ws
from modelbank.api.deps import DB, Caller
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses

router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    responses=problem_responses(*COMMON_PROBLEMS),
)


@router.post("/pricing/what-if", response_model=ws.WhatIfOut, response_model_by_alias=True)
def what_if(body: ws.WhatIfIn, caller: Caller, db: DB) -> ws.WhatIfOut:
    """Price the usage charged in ``[from, to)`` under today's prices and under the proposed
    ones (admin; read-only: nothing is written). Per model and in total: revenue, provider
    cost, creator earnings, margin, events no wallet could have paid, and the users who
    would have run dry. At most 366 days and 200,000 events (else a 422 problem
    ``what_if_too_large``)."""
    caller.require_admin()
    proposal = body.proposal()
    with db.read() as session:
        report = whatif.recorded_what_if(session, body.start, body.end, proposal)
    return ws.what_if_out(report)
