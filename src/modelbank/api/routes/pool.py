"""The resource pool over HTTP (DESIGN §9): deposits of provider keys, their status,
withdrawal, platform keys and the admin panel's data. Thin: every rule is in
:mod:`modelbank.pool`.

A deposit runs in three steps so that no database transaction waits on the network:
register (``pending``) and commit, probe the key (``GET {base_url}/models``), then activate
(credit the depositor) or fail it and commit. A retry with the same ``Idempotency-Key`` and
body answers with the same resource as it is now, probing it again if it is still pending
(the first attempt was interrupted, or the upstream was unreachable).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from modelbank.api import pool_schemas as ps
from modelbank.api.deps import (
    DB,
    IDEMPOTENCY_HIT,
    Caller,
    Database,
    IdemKey,
    PathId,
    decode_cursor,
    encode_cursor,
    scoped,
)
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.auth.service import Principal, Role
from modelbank.idempotency import service as idempotency
from modelbank.pool import intake, keys, routelog
from modelbank.pool import service as pool
from modelbank.pool.errors import ResourceNotFound
from modelbank.pool.resources import LIST_LIMIT, ResourceInfo
from modelbank.secrets import SecretBox

router = APIRouter(prefix="/api/v1", tags=["pool"], responses=problem_responses(*COMMON_PROBLEMS))

Limit = Annotated[int, Query(ge=1, le=LIST_LIMIT, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the last page")]
OptionalIdemKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=idempotency.MAX_KEY_LENGTH,
        description="optional: a retry with the same key and body answers like the first",
    ),
]


def _visible(session: Session, caller: Principal, resource_id: int) -> ResourceInfo:
    """The resource if ``caller`` may see it: an admin sees all; a user key its own; a
    service key any user's (it acts for users). Others get the 404 of a missing one."""
    info = pool.get_resource(session, resource_id)
    if caller.is_admin or (info.owner_id is not None and caller.can_act_for(info.owner_id)):
        return info
    raise ResourceNotFound(f"no resource {resource_id}", resource_id=resource_id)


def _register_once(
    db: Database,
    caller: Principal,
    owner_id: int | None,
    body: ps.ResourceIn,
    box: SecretBox,
    key: str | None,
    route: str,
) -> tuple[ResourceInfo, bool]:
    """Step 1 of a deposit, one transaction: (the resource, whether it was a replay)."""
    shown = {**body.model_dump(mode="json"), "api_key": keys.fingerprint(body.api_key)}
    request_hash = idempotency.fingerprint("POST", route, shown)
    with db.write() as session:
        if key is not None:
            stored = idempotency.lookup(session, caller.scope, key, request_hash)
            if stored is not None:
                return pool.get_resource(session, int(stored.body["id"])), True
        info = pool.register(
            session,
            owner_id,
            provider=body.provider,
            base_url=body.base_url,
            api_key=body.api_key,
            models=[(m.model, m.upstream_model) for m in body.models],
            quota_uusd=body.quota_uusd,
            market_quota_uusd=body.market_quota_uusd,
            box=box,
            private_hosts=db.settings.pool_private_upstreams,
        )
        if key is not None:
            out = ps.resource_out(info).model_dump(mode="json")
            idempotency.store(session, caller.scope, key, request_hash, 201, out)
        return info, False


async def _deposit(
    request: Request,
    db: Database,
    caller: Principal,
    owner_id: int | None,
    body: ps.ResourceIn,
    key: str | None,
    route: str,
) -> JSONResponse:
    if key is not None:
        idempotency.check_key(key)
    box: SecretBox = request.app.state.secret_box
    info, hit = await run_in_threadpool(_register_once, db, caller, owner_id, body, box, key, route)
    info = await intake.complete(  # steps 2-3: probe outside any transaction, then settle
        info,
        body.api_key,
        db.write,
        client=db.pool_http_client,
        credits_per_usd=db.settings.credits_per_usd,
    )
    return JSONResponse(
        ps.resource_out(info).model_dump(mode="json"),
        status_code=201,
        headers={IDEMPOTENCY_HIT: "true" if hit else "false"},
    )


@router.post(
    "/users/{user_id}/resources",
    status_code=201,
    response_model=ps.ResourceOut,
)
async def deposit(
    user_id: PathId,
    body: ps.ResourceIn,
    key: IdemKey,
    caller: Caller,
    db: DB,
    request: Request,
) -> JSONResponse:
    """Deposit a provider key for ``user_id`` (that user, or an admin/service key acting for
    them). The key is probed (``GET {base_url}/models``) before it becomes ``active``; then
    the depositor is credited 90 % of the pool part's credit value (``quota_uusd −
    market_quota_uusd`` at the platform's credits per USD) as a ``deposit`` grant, and 10 %
    goes to the platform's fees (rates are platform settings). A refused key → ``failed``,
    nothing credited; an unreachable upstream → ``pending`` with the reason (retry with the
    same Idempotency-Key). 409 ``resource_key_exists`` when the key is already in the pool."""
    scoped(caller, user_id)
    return await _deposit(request, db, caller, user_id, body, key, f"/users/{user_id}/resources")


@router.get("/users/{user_id}/resources", response_model=ps.ResourcePage)
def list_user_resources(
    user_id: PathId, caller: Caller, db: DB, limit: Limit = 100, cursor: Cursor = None
) -> ps.ResourcePage:
    """The user's deposited resources, oldest first (never the keys)."""
    scoped(caller, user_id)
    with db.read() as session:
        found = pool.list_resources(
            session, user_id, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    return ps.ResourcePage(
        items=[ps.resource_out(r) for r in found],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


@router.get("/resources/{resource_id}", response_model=ps.ResourceOut)
def get_resource(resource_id: PathId, caller: Caller, db: DB) -> ps.ResourceOut:
    """One resource: its status, quota used and deposit accounting (its owner, or an
    admin; anyone else gets 404)."""
    with db.read() as session:
        return ps.resource_out(_visible(session, caller, resource_id))


@router.post("/resources/{resource_id}/withdraw", response_model=ps.ResourceOut)
def withdraw(
    resource_id: PathId, caller: Caller, db: DB, key: OptionalIdemKey = None
) -> JSONResponse:
    """Take a resource out of the pool (its owner, or an admin). The deposit credit whose
    quota was not consumed is clawed back from the depositor's wallet; what the wallet no
    longer holds becomes a debt collected from later credits. The platform's fee is not
    returned. Withdrawing again answers the same."""

    def run(session: Session) -> tuple[int, dict[str, Any]]:
        _visible(session, caller, resource_id)
        return 200, ps.resource_out(pool.withdraw(session, resource_id)).model_dump(mode="json")

    if key is not None:
        idempotency.check_key(key)
        return db.idempotent(caller, key, f"/resources/{resource_id}/withdraw", {}, run)
    with db.write() as session:
        status, out = run(session)
    return JSONResponse(out, status_code=status)


@router.post("/admin/resources", status_code=201, response_model=ps.ResourceOut)
async def deposit_platform_key(
    body: ps.ResourceIn,
    caller: Caller,
    db: DB,
    request: Request,
    key: OptionalIdemKey = None,
) -> JSONResponse:
    """Add one of the operator's own provider keys to the pool (admin): a platform resource,
    probed like a deposit, with no deposit credit."""
    caller.require_admin()
    return await _deposit(request, db, caller, None, body, key, "/admin/resources")


@router.get("/admin/pool", response_model=ps.PoolPanelOut)
def pool_panel(
    caller: Caller, db: DB, limit: Limit = 100, cursor: Cursor = None
) -> ps.PoolPanelOut:
    """The admin pool panel's data: resources by status, quota and consumption, deposit
    credit, fees, clawbacks and open debts, the usage pool resources served and the
    platform's spread on it (charge − provider cost), and a page of resources."""
    caller.require_admin()
    with db.read() as session:
        found = pool.summary(
            session,
            credits_per_usd=db.settings.credits_per_usd,
            after_id=decode_cursor(cursor) or 0,
            limit=limit,
        )
    last = found.resources[-1].resource.id if len(found.resources) == limit else None
    return ps.panel_out(found, None if last is None else encode_cursor(last))


@router.get("/resources/{resource_id}/route-logs", response_model=ps.RouteLogPage)
def route_logs(
    resource_id: PathId,
    caller: Caller,
    db: DB,
    limit: Annotated[int, Query(ge=1, le=routelog.MAX_PAGE, description="page size")] = 50,
    cursor: Cursor = None,
) -> ps.RouteLogPage:
    """The gateway requests this resource served, oldest first, with the router's
    candidates, scores and attempts (its owner, or an admin; others 404). A depositor sees
    its own resource's part of each decision and nothing of the users who made the
    requests; no prompt or key is ever recorded."""
    full = caller.role in (Role.ADMIN, Role.SERVICE)
    with db.read() as session:
        _visible(session, caller, resource_id)
        rows = routelog.list_for_resource(
            session, resource_id, after_id=decode_cursor(cursor) or 0, limit=limit
        )
    return ps.RouteLogPage(
        items=[
            ps.route_log_out(r, resource_id=resource_id, full=full, viewer=caller.user_id)
            for r in rows
        ],
        next_cursor=encode_cursor(rows[-1].id) if len(rows) == limit else None,
    )
