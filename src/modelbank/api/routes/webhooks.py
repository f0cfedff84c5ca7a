"""Admin: outgoing webhook endpoints and their delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from modelbank.api import webhook_schemas as w
from modelbank.api.deps import DB, Caller, PathId, decode_cursor, encode_cursor
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.secrets import SecretBox
from modelbank.webhooks import service as webhooks
from modelbank.webhooks.models import DeliveryStatus

router = APIRouter(
    prefix="/api/v1/admin/webhooks",
    tags=["webhooks"],
    responses=problem_responses(*COMMON_PROBLEMS),
)

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the last page")]


def secret_box(request: Request) -> SecretBox:
    """The app's :class:`SecretBox` (built once by ``create_app`` from the settings)."""
    box: SecretBox = request.app.state.secret_box
    return box


Box = Annotated[SecretBox, Depends(secret_box)]


@router.post("", status_code=201, response_model=w.WebhookCreatedOut)
def create_webhook(body: w.WebhookIn, caller: Caller, db: DB, box: Box) -> w.WebhookCreatedOut:
    """Register an endpoint (admin). The signing secret is in this response only."""
    caller.require_admin()
    with db.write() as session:
        info, secret = webhooks.create_endpoint(
            session,
            box,
            url=body.url,
            events=body.events,
            description=body.description,
        )
    return w.WebhookCreatedOut(**w.WebhookOut.of(info).model_dump(), secret=secret)


@router.get("", response_model=w.WebhookPage)
def list_webhooks(
    caller: Caller, db: DB, limit: Limit = 100, cursor: Cursor = None
) -> w.WebhookPage:
    """Every endpoint, disabled ones included, in id order (admin)."""
    caller.require_admin()
    with db.read() as session:
        found = webhooks.list_endpoints(session, after_id=decode_cursor(cursor) or 0, limit=limit)
    return w.WebhookPage(
        items=[w.WebhookOut.of(e) for e in found],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )


@router.get("/{webhook_id}", response_model=w.WebhookOut)
def get_webhook(webhook_id: PathId, caller: Caller, db: DB) -> w.WebhookOut:
    """One endpoint (admin); never its secret."""
    caller.require_admin()
    with db.read() as session:
        return w.WebhookOut.of(webhooks.get_endpoint(session, webhook_id))


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
def disable_webhook(webhook_id: PathId, caller: Caller, db: DB) -> Response:
    """Disable an endpoint (admin; idempotent): it gets no new deliveries and its pending
    ones are marked failed. The delivery log is kept."""
    caller.require_admin()
    with db.write() as session:
        webhooks.disable_endpoint(session, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=w.DeliveryPage)
def list_deliveries(
    webhook_id: PathId,
    caller: Caller,
    db: DB,
    status: DeliveryStatus | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> w.DeliveryPage:
    """The endpoint's delivery log, newest first (admin): status, attempts, the last HTTP
    status or error, the next attempt."""
    caller.require_admin()
    with db.read() as session:
        found = webhooks.list_deliveries(
            session,
            endpoint_id=webhook_id,
            status=status,
            before_id=decode_cursor(cursor),
            limit=limit,
        )
    return w.DeliveryPage(
        items=[w.DeliveryOut.of(d) for d in found],
        next_cursor=encode_cursor(found[-1].id) if len(found) == limit else None,
    )
