"""User — API keys on the wallet page (issue 13): create a key, optionally with a spend limit
per day, week, month or for its lifetime, see each key's limit and what is left, change a
key's limit, revoke a key.
The same services as ``/api/v1/users/{id}/keys``; the new key's secret is shown once, on the
page answering the form (never in a redirect or a cookie)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from modelbank.api.deps import PathId, scoped
from modelbank.auth import service as auth
from modelbank.auth.limits import LimitPeriod
from modelbank.errors import InvalidInput
from modelbank.web import forms
from modelbank.web.forms import Form, optional_text, text_field
from modelbank.web.render import flash_redirect, render
from modelbank.web.session import Viewer, signed_in_post, state_of

router = APIRouter(include_in_schema=False)

Posted = Annotated[Viewer, Depends(signed_in_post)]

PERIODS = [p.value for p in LimitPeriod]
"""The reset periods offered by the form, in the order shown."""


@router.post("/users/{user_id}/keys")
def create_key(request: Request, user_id: PathId, viewer: Posted, form: Form) -> Response:
    """Create a key for the user (``name``; ``limit`` in credits, blank for none;
    ``limit_period``) and show its secret once."""
    scoped(viewer.principal, user_id)
    viewer.principal.require_key_manager()
    limit_ucr = forms.credits_amount(optional_text(form, "limit"), "limit")
    period = text_field(form, "limit_period") or LimitPeriod.NEVER.value
    if period not in PERIODS:
        raise InvalidInput(f"limit period must be one of {', '.join(PERIODS)}")
    with state_of(request).db.write() as session:
        key = auth.create_key(
            session,
            auth.Role.USER,
            user_id=user_id,
            name=text_field(form, "name")[:200],
            limit_ucr=limit_ucr,
            limit_period=None if limit_ucr is None else period,
        )
    return render(request, "key_created.html", viewer, {"key": key}, status_code=201)


@router.post("/users/{user_id}/keys/{key_id}/limit")
def edit_limit(
    request: Request, user_id: PathId, key_id: PathId, viewer: Posted, form: Form
) -> Response:
    """Change a key's spend limit (``limit`` in credits, blank: no limit; ``limit_period``),
    as ``PATCH /api/v1/users/{id}/keys/{key_id}`` does."""
    scoped(viewer.principal, user_id)
    viewer.principal.require_key_manager()
    limit_ucr = forms.credits_amount(optional_text(form, "limit"), "limit")
    period = text_field(form, "limit_period") or LimitPeriod.NEVER.value
    if period not in PERIODS:
        raise InvalidInput(f"limit period must be one of {', '.join(PERIODS)}")
    db = state_of(request).db
    with db.write() as session:
        auth.edit_key_limit(
            session,
            user_id,
            key_id,
            limit_ucr=limit_ucr,
            limit_period=None if limit_ucr is None else period,
            remove=limit_ucr is None,
        )
    db.keys.clear()
    said = "no limit" if limit_ucr is None else "a new limit"
    return flash_redirect(request, f"/app/users/{user_id}/wallet", f"Key #{key_id} has {said}.")


@router.post("/users/{user_id}/keys/{key_id}/revoke")
def revoke_key(
    request: Request, user_id: PathId, key_id: PathId, viewer: Posted, form: Form
) -> Response:
    """Revoke one of the user's keys; it is refused from then on (a session signed in with
    it ends too)."""
    scoped(viewer.principal, user_id)
    viewer.principal.require_key_manager()
    db = state_of(request).db
    with db.write() as session:
        auth.revoke_user_key(session, user_id, key_id)
    db.keys.clear()
    return flash_redirect(request, f"/app/users/{user_id}/wallet", f"Key #{key_id} revoked.")
