"""Usage metering over HTTP: one event, or up to 1,000 per request (DESIGN §6)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelbank.api import schemas as s
from modelbank.api.deps import DB, IDEMPOTENCY_HIT, Caller, Database, IdemKey, scoped
from modelbank.api.errors import COMMON_PROBLEMS, problem_responses
from modelbank.auth.service import Principal
from modelbank.catalog import service as catalog
from modelbank.catalog.errors import CharacterNotFound
from modelbank.catalog.service import ModelInfo
from modelbank.metering import service as metering
from modelbank.metering.service import ChargeResult, UsageEvent
from modelbank.money import format_credits, format_usd
from modelbank.ratelimits.service import Limiter

router = APIRouter(
    prefix="/api/v1",
    tags=["usage"],
    responses=problem_responses(*COMMON_PROBLEMS, 402),
)


def metering_key(caller: Principal, key: str) -> str:
    """The usage row's idempotency key: the header as given for admin and service keys
    (the operator's own request ids), prefixed ``u<user id>:`` for user keys so that one
    user can never claim or probe another's keys."""
    return key if caller.user_id is None else f"u{caller.user_id}:{key}"


def event_of(
    body: s.UsageIn, key: str, model: int | str | None = None, limited_key_id: int | None = None
) -> UsageEvent:
    """The metering event of ``body``; ``model`` (the id a character resolved to) replaces
    ``body.model``. The idempotency fingerprint then binds the key to the resolved model.
    ``limited_key_id``: the caller's API key when it has a spend limit."""
    resolved = model if model is not None else body.model
    assert resolved is not None  # UsageIn: exactly one of model and character_id
    return UsageEvent(
        idempotency_key=key,
        user_id=body.user_id,
        model=resolved,
        usage_type=body.usage_type,
        input_tokens=body.input_tokens,
        output_tokens=body.output_tokens,
        cached_input_tokens=body.cached_input_tokens,
        units=body.units,
        occurred_at=body.occurred_at,
        metadata=body.metadata,
        limited_key_id=limited_key_id,
    )


def usage_out(result: ChargeResult) -> s.UsageOut:
    assert result.usage_id is not None and result.model_id is not None
    balance = result.balance_ucr or 0
    return s.UsageOut(
        usage_id=result.usage_id,
        model_id=result.model_id,
        charge_ucr=result.charge_ucr,
        charge=format_credits(result.charge_ucr),
        cost_uusd=result.cost_uusd,
        cost=format_usd(result.cost_uusd, places=6),
        balance_ucr=balance,
        balance=format_credits(balance),
        earnings=[s.EarningOut(user_id=u, amount_ucr=a) for u, a in result.earnings],
        price_version_id=result.price_version_id,
    )


@router.post(
    "/usage",
    status_code=201,
    response_model=s.UsageOut,
)
async def charge(body: s.UsageIn, key: IdemKey, caller: Caller, db: DB) -> JSONResponse:
    """Charge one usage event: admin and service keys for any user, a user key for itself.
    The model is ``model`` (id or slug) or the active model linked to ``character_id``
    (404 ``character_not_found`` when none is). The ``Idempotency-Key`` identifies the
    event: a retry returns the first result with ``Idempotency-Hit: true``. Premium models
    need bought access. A key with a spend limit counts the charge against it: 402
    ``key_limit_reached`` past the limit, nothing charged."""
    scoped(caller, body.user_id)
    if db.limiter is not None:
        await db.check_tokens(caller, body.user_id)
    model = None
    if body.character_id is not None:
        model = await run_in_threadpool(character_model, db, body.character_id)
    result = await db.charge(
        event_of(body, metering_key(caller, key), model, caller.limited_key_id)
    )
    if db.limiter is not None and result.status == "charged":
        await db.add_tokens(caller, body.user_id, body.input_tokens + body.output_tokens)
    hit = "true" if result.status == "replayed" else "false"
    return JSONResponse(
        usage_out(result).model_dump(mode="json"), status_code=201, headers={IDEMPOTENCY_HIT: hit}
    )


def character_model(db: Database, character_id: str) -> int:
    """The id of the active model linked to ``character_id``. Raises
    :class:`~modelbank.catalog.errors.CharacterNotFound`."""
    with db.read() as session:
        return catalog.model_for_character(session, character_id).id


@router.post("/usage/batch", response_model=s.BatchOut)
def charge_batch(body: s.BatchIn, caller: Caller, db: DB) -> s.BatchOut:
    """Charge up to 1,000 events (admin and service keys), each with its own
    ``idempotency_key``, in one transaction. Each event names its model by ``model`` or
    ``character_id``; one whose character has no active model is rejected with
    ``character_not_found``. Each event succeeds or is rejected on its own; the results come
    back in order."""
    caller.require_admin_or_service()
    limiter = db.limiter
    if limiter is not None:  # the key's tokens (the operator's backend); users' are counted
        limiter.check_tokens(caller.key_id, None)
    with db.write() as session:
        characters = catalog.resolve_characters(
            session, [e.character_id for e in body.events if e.character_id is not None]
        )
        results = _charge_resolved(session, body.events, characters, caller.limited_key_id)
    if limiter is not None:
        _count_tokens(limiter, caller, body.events, results)
    out = []
    for r in results:
        out.append(
            s.BatchResultOut(
                idempotency_key=r.idempotency_key,
                status=r.status,
                usage_id=r.usage_id,
                charge_ucr=r.charge_ucr,
                balance_ucr=r.balance_ucr,
                earnings=[s.EarningOut(user_id=u, amount_ucr=a) for u, a in r.earnings],
                error=None
                if r.error_code is None
                else s.BatchError(code=r.error_code, detail=r.error_message or r.error_code),
            )
        )
    return s.BatchOut(
        charged=sum(r.status == "charged" for r in results),
        replayed=sum(r.status == "replayed" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        results=out,
    )


def _count_tokens(
    limiter: Limiter, caller: Principal, events: list[s.BatchEventIn], results: list[ChargeResult]
) -> None:
    """Add the charged events' tokens to the key's and each user's minute."""
    by_user: dict[int, int] = {}
    for event, result in zip(events, results, strict=True):
        if result.status == "charged":
            tokens = event.input_tokens + event.output_tokens
            by_user[event.user_id] = by_user.get(event.user_id, 0) + tokens
    if by_user:
        limiter.add_tokens(caller.key_id, None, sum(by_user.values()))
    for user_id, tokens in by_user.items():
        limiter.add_tokens(None, user_id, tokens)


def _charge_resolved(
    session: Session,
    events: list[s.BatchEventIn],
    characters: dict[str, ModelInfo],
    limited_key_id: int | None = None,
) -> list[ChargeResult]:
    """Charge the events whose model is known in one batch; an event whose character has no
    active model is rejected (``character_not_found``) in its place. Results in order."""
    results: list[ChargeResult | None] = []
    todo: list[UsageEvent] = []
    for e in events:
        if e.character_id is None or e.character_id in characters:
            model = None if e.character_id is None else characters[e.character_id].id
            todo.append(event_of(e, e.idempotency_key, model, limited_key_id))
            results.append(None)
        else:
            results.append(
                ChargeResult(
                    idempotency_key=e.idempotency_key,
                    status="rejected",
                    error_code=CharacterNotFound.code,
                    error_message=f"no active model for character {e.character_id!r}",
                )
            )
    charged = iter(metering.charge_batch(session, todo) if todo else [])
    return [r if r is not None else next(charged) for r in results]
