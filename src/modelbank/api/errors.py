"""One mapping from domain errors to RFC 9457 problem+json responses (STYLE §5).

Every error body is ``{"type", "title", "status", "detail", "code"}`` plus the error's
context (and ``errors`` for validation failures); ``type`` is ``urn:modelbank:problem:<code>``,
stable API like ``code``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelbank.errors import DomainError, IdempotencyConflict, InvalidInput, NotFound

PROBLEM_JSON = "application/problem+json"

STATUS_BY_CODE: dict[str, int] = {
    "unauthenticated": 401,
    "forbidden": 403,
    "model_access_required": 403,
    "insufficient_funds": 402,
    # the caller's key spent its limit for the period: like funds, more credits (a new
    # period, a higher limit) fix it
    "key_limit_reached": 402,
    "idempotency_key_reused": 409,
    "model_exists": 409,
    "character_in_use": 409,
    "user_exists": 409,
    "hold_not_pending": 409,
    "hold_expired": 409,
    "batch_too_large": 413,
    "hold_amount_exceeded": 409,
    # an account's running total would pass 2⁶² µcr: a state of the ledger, not bad input
    "account_total_limit": 409,
    "purchase_state_conflict": 409,
    "payment_method_required": 409,
    "subscription_state_conflict": 409,
    "promo_code_unavailable": 409,
    "referral_not_allowed": 409,
    "refund_exceeds_charge": 409,
    "stake_listing_state": 409,
    # resource pool: a key already live in the pool, or a resource in the wrong status
    "resource_key_exists": 409,
    "resource_state": 409,
    # marketplace: a listing no longer open, an allocation already closed, a dispute
    # already open or resolved (a race the caller lost: 409, nothing written)
    "market_listing_state": 409,
    "market_price_changed": 409,
    "allocation_state": 409,
    "dispute_state": 409,
    # moving pool quota to the market part reverses deposit credit the wallet no longer holds
    "deposit_credit_spent": 409,
    # the operator's pool rates are out of range: not the depositor's fault
    "pool_settings_invalid": 500,
    # payouts: a request the caller can fix by asking for less or more (422, not 402: 402
    # means "buy credits" here, and purchased credits can never be paid out)
    "payout_below_minimum": 422,
    "payout_exceeds_available": 422,
    "payout_state_conflict": 409,
    "payout_blocked_by_debt": 409,
    "webhook_signature_invalid": 400,
    "payment_provider_error": 502,
    # asking for a provider this installation does not offer: the caller's choice, not an
    # outage (a 5xx would tell Stripe and clients to retry what can never succeed)
    "payment_provider_not_configured": 422,
    # the wallets' grants disagree with the ledger: a bug, never the caller's fault
    "grants_out_of_balance": 500,
    # the server's secret key is misconfigured or changed: not the caller's fault
    "invalid_secret_key": 500,
    "secret_undecryptable": 500,
    "secret_key_mismatch": 500,
    "rate_limited": 429,
}
"""HTTP status of the codes that are not plain 404 (NotFound) / 422 (InvalidInput)."""


_DESCRIPTIONS = {
    400: "Malformed request (e.g. a body that is not UTF-8)",
    401: "No API key, or an unknown or revoked one",
    402: "Insufficient funds, or the key's spend limit reached: nothing was written",
    403: "The key's role may not do this, or a premium model without access",
    404: "Unknown, or another user's (not revealed)",
    409: "Idempotency-Key reused with another body, or a duplicate",
    422: "Invalid input: nothing was written",
    429: "Rate limited (`Retry-After` says when to try again): nothing was written",
    502: "The payment provider failed or refused the request: nothing was granted",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses (problem+json bodies)."""
    from modelbank.api.schemas import Problem

    return {status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in statuses}


COMMON_PROBLEMS = (400, 401, 403, 404, 409, 422, 429)
"""Errors any /api/v1 operation may answer."""


def problem_media_type(openapi: dict[str, Any]) -> dict[str, Any]:
    """Declare every 4xx/5xx body of an OpenAPI document as ``application/problem+json``."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if str(status)[0] in "45" and content and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
    return openapi


def status_for(error: DomainError) -> int:
    """The HTTP status of a domain error."""
    if error.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[error.code]
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, InvalidInput):
        return 422
    if isinstance(error, IdempotencyConflict):
        return 409
    return 400


def problem(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A problem+json response."""
    body = {
        "type": f"urn:modelbank:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **jsonable_encoder(extra),
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_for(error: DomainError) -> JSONResponse:
    """The problem+json response of a domain error (its context is included)."""
    status = status_for(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if "retry_after_s" in error.context:
        headers = {"Retry-After": str(error.context["retry_after_s"])}
    context = {k: v for k, v in error.context.items() if k not in ("type", "title", "status")}
    return problem(status, error.code, error.message, headers, **context)


def install(app: FastAPI) -> None:
    """Register the handlers: domain errors, validation errors, HTTP errors."""

    async def on_domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return problem_for(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return problem(
            422,
            "validation_error",
            f"{where}: {first['msg']}" if where else str(first["msg"]),
            errors=errors,
        )

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        )
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, code, str(exc.detail), headers)

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
