"""User — the resource pool (DESIGN §9): the provider keys a user deposited, what each
served and earned them, a deposit form, withdrawal, and each resource's recent requests.

A deposit runs the API's flow (:mod:`modelbank.pool.intake`): register (``pending``) in the
form's first transaction, probe the key outside any transaction, then activate (credit the
deposit) or fail it. The key is shown back only as its mask and fingerprint; no page, flash
message or stored form response ever carries it.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from modelbank.api.deps import PathId, scoped
from modelbank.catalog import manage
from modelbank.errors import InvalidInput
from modelbank.money import UUSD_PER_USD, mul
from modelbank.pool import intake, reports
from modelbank.pool import service as pool
from modelbank.pool.deposits import ModelSpec
from modelbank.pool.health import HealthStore, health_store
from modelbank.pool.resources import ResourceInfo
from modelbank.users import service as users
from modelbank.web import forms, views
from modelbank.web.forms import Done, Form, submit_once, text_field
from modelbank.web.render import render
from modelbank.web.session import Viewer, signed_in, signed_in_post, state_of

router = APIRouter(include_in_schema=False)

SignedIn = Annotated[Viewer, Depends(signed_in)]
Posted = Annotated[Viewer, Depends(signed_in_post)]

MODEL_ROWS = 4
"""Blank "catalog model → upstream name" rows in the deposit form (more: deposit again, or
use the API)."""
MODEL_CHOICES = 1_000
"""Catalog slugs offered as suggestions in the deposit form (typing any slug works)."""
LOGS_PAGE = 50
"""Route log rows per page of a resource's requests."""


def pool_health(request: Request) -> HealthStore:
    """The shared health store of this process (database, or Redis when configured), made
    on first use and kept on the dashboard app."""
    app_state = request.app.state
    store: HealthStore | None = getattr(app_state, "pool_health", None)
    if store is None:
        db = state_of(request).db
        store = health_store(db.settings, db.engine)
        app_state.pool_health = store
    return store


def usd_amount(text: str | None, label: str) -> int | None:
    """Dollars typed in a form as µUSD, exactly (Decimal × 1,000,000, which must be a whole
    number of µUSD); None when blank. Raises :class:`InvalidInput`."""
    value = forms.decimal_field(text, label)
    if value is None:
        return None
    uusd = mul(value, UUSD_PER_USD)
    if uusd != uusd.to_integral_value():
        raise InvalidInput(f"{label} has more than 6 decimals")
    return int(uusd)


def model_rows(form: FormData) -> list[ModelSpec]:
    """The "catalog model → upstream name" rows filled in (blank rows skipped; a blank
    upstream name means the catalog slug itself). Raises :class:`InvalidInput` when no
    row is filled or a row names an upstream model but no catalog model."""
    slugs = [v if isinstance(v, str) else "" for v in form.getlist("model")]
    names = [v if isinstance(v, str) else "" for v in form.getlist("upstream_model")]
    names += [""] * (len(slugs) - len(names))
    rows: list[ModelSpec] = []
    for n, (slug, name) in enumerate(zip(slugs, names, strict=False), start=1):
        slug, name = slug.strip(), name.strip()
        if not slug and not name:
            continue
        if not slug:
            raise InvalidInput(f"model row {n}: name the catalog model that {name!r} serves")
        rows.append((slug, name or slug))
    if not rows:
        raise InvalidInput("name at least one model the key serves")
    return rows


def deposit_fields(form: FormData) -> dict[str, Any]:
    """The deposit form as :func:`modelbank.pool.deposits.register`'s keyword arguments
    (quota and market part typed in dollars → µUSD). Raises :class:`InvalidInput`."""
    quota = usd_amount(text_field(form, "quota_usd", required=True, label="quota"), "quota")
    market = usd_amount(text_field(form, "market_usd"), "market part") or 0
    if not quota:
        raise InvalidInput("quota must be more than $0")
    if market > quota:
        raise InvalidInput("the market part cannot be more than the quota")
    return {
        "provider": text_field(form, "provider", required=True),
        "base_url": text_field(form, "base_url", required=True, label="base URL"),
        "api_key": text_field(form, "api_key", required=True, label="API key"),
        "models": model_rows(form),
        "quota_uusd": quota,
        "market_quota_uusd": market,
    }


def _page(user_id: int) -> str:
    return f"/app/users/{user_id}/pool"


def outcome_text(info: ResourceInfo) -> Done:
    """The message after a deposit (or a check) of ``info``, by its status."""
    page = _page(info.owner_id or 0)
    if info.status == "active" or info.status == "depleted":
        return Done(
            page,
            f"Resource #{info.id} is {info.status}: {views.credits(info.deposit_credit_ucr)}"
            f" credits were added to your wallet (platform fee {views.credits(info.fee_ucr)}).",
        )
    if info.status == "failed":
        return Done(
            page,
            f"Resource #{info.id} failed its check ({info.status_reason}). Nothing was credited.",
            kind="error",
        )
    if info.status == "pending":
        return Done(
            page,
            f"Resource #{info.id} is pending: {info.status_reason or 'not checked yet'}."
            " Nothing is credited until the check passes; press “Check again” later.",
            kind="error",
        )
    return Done(page, f"Resource #{info.id} is {info.status}.")


@router.get("/users/{user_id}/pool")
def pool_page(request: Request, user_id: PathId, viewer: SignedIn) -> Response:
    """The user's deposited keys with their quota, usage, health and credit (its owner, or
    an admin), and the deposit form."""
    scoped(viewer.principal, user_id)
    db = state_of(request).db
    with db.read() as session:
        user = users.get_user(session, user_id)
        choices = [m.slug for m in manage.list_models(session, limit=MODEL_CHOICES)]
        credit_bps, fee_bps = pool.deposit_rates(session)
    lines = reports.owner_reports(
        db.read, user_id, pool_health(request), credits_per_usd=db.settings.credits_per_usd
    )
    live = [line for line in lines if line.resource.status not in reports.ENDED]
    return render(
        request,
        "pool.html",
        viewer,
        {
            "user": user,
            "lines": lines,
            "earned_ucr": sum(line.resource.deposit_credit_ucr for line in lines),
            "clawed_ucr": sum(line.resource.clawed_back_ucr for line in lines),
            "outstanding_ucr": sum(line.outstanding_ucr for line in lines),
            "live": len(live),
            "choices": choices,
            "model_rows": MODEL_ROWS,
            "rate": views.decimal_text(db.settings.credits_per_usd),
            "credit_bps": credit_bps,
            "fee_bps": fee_bps,
        },
    )


@router.get("/users/{user_id}/pool/{resource_id}")
def resource_page(
    request: Request,
    user_id: PathId,
    resource_id: PathId,
    viewer: SignedIn,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """One of the user's resources and the requests it served, newest first (time, model,
    outcome, attempts, latency, charge: never who asked nor what)."""
    scoped(viewer.principal, user_id)
    db = state_of(request).db
    line = reports.resource_report(
        db.read,
        resource_id,
        pool_health(request),
        owner_id=user_id,
        credits_per_usd=db.settings.credits_per_usd,
    )
    with db.read() as session:
        found = reports.recent_logs(
            session, resource_id=resource_id, before_id=before, limit=LOGS_PAGE
        )
    return render(
        request,
        "pool_resource.html",
        viewer,
        {
            "user_id": user_id,
            "line": line,
            "r": line.resource,
            "logs": found,
            "older": None
            if found.next_before_id is None
            else views.query_string({}, before=found.next_before_id),
        },
    )


@router.post("/users/{user_id}/pool/deposits")
def deposit(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Deposit a provider key: registered, probed (``GET {base_url}/models``) and, when it
    answers, activated with the deposit credit (the same steps as
    ``POST /api/v1/users/{id}/resources``). Submitted once per form key."""
    scoped(viewer.principal, user_id)
    fields = deposit_fields(form)
    web = state_of(request)
    db = web.db
    registered: dict[str, Any] = {"resource_id": None}

    def run(transaction: forms.Transaction) -> Done:
        with transaction() as session:
            info = pool.register(
                session,
                user_id,
                box=web.sessions.box,
                private_hosts=db.settings.pool_private_upstreams,
                **fields,
            )
            registered["resource_id"] = info.id
        settled = anyio.from_thread.run(
            functools.partial(
                intake.complete,
                info,
                fields["api_key"],
                db.write,
                client=db.pool_http_client,
                credits_per_usd=db.settings.credits_per_usd,
            )
        )
        return outcome_text(settled)

    def replay(body: dict[str, Any]) -> Done:
        if body.get("resource_id") is None:
            return Done(_page(user_id), "This deposit was already submitted: it is listed below.")
        with db.read() as session:
            info = pool.get_resource(session, int(body["resource_id"]))
        return Done(
            _page(user_id),
            f"This deposit was already submitted: resource #{info.id} is {info.status}.",
        )

    return forms.start_once(
        request, viewer, form, run, recorded=lambda _session: dict(registered), replay=replay
    )


def _own(session: Session, user_id: int, resource_id: int) -> ResourceInfo:
    """The resource if it is ``user_id``'s; else the 404 of a missing one."""
    return pool.get_resource(session, resource_id, owner_id=user_id, admin=False)


@router.post("/users/{user_id}/pool/{resource_id}/withdraw")
def withdraw(
    request: Request, user_id: PathId, resource_id: PathId, viewer: Posted, form: Form
) -> Response:
    """Take the resource out of the pool: the deposit credit of its unconsumed quota is
    clawed back (from the wallet, the rest as a debt on later credits)."""
    scoped(viewer.principal, user_id)

    def run(session: Session) -> Done:
        _own(session, user_id, resource_id)
        info = pool.withdraw(session, resource_id)
        return Done(
            _page(user_id),
            f"Resource #{info.id} withdrawn: {views.credits(info.clawed_back_ucr)} credits of"
            " deposit credit for unused quota were taken back.",
        )

    return submit_once(request, viewer, form, run)


@router.post("/users/{user_id}/pool/{resource_id}/check")
def check_again(request: Request, user_id: PathId, resource_id: PathId, viewer: Posted) -> Response:
    """Probe a pending resource again (its upstream was unreachable) and activate it when
    it answers."""
    scoped(viewer.principal, user_id)
    web = state_of(request)
    db = web.db
    with db.read() as session:
        _own(session, user_id, resource_id)
    info = anyio.from_thread.run(
        functools.partial(
            intake.reprobe,
            resource_id,
            db.write,
            box=web.sessions.box,
            client=db.pool_http_client,
            credits_per_usd=db.settings.credits_per_usd,
        )
    )
    return outcome_text(info).response(request)
