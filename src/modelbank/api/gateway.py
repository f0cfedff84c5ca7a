"""The OpenAI-compatible surface, mounted at ``/v1`` by :func:`modelbank.api.app.create_app`
(DESIGN §9): ``POST /v1/chat/completions`` (SSE streaming too), ``POST /v1/embeddings``,
``POST /v1/images/generations``, ``GET /v1/models``.

Thin over :class:`modelbank.gateway.service.Gateway`: authenticate (modelbank API keys as
``Authorization: Bearer``, so the official ``openai`` SDKs work unchanged), bound and
validate the body, say for whom (a user key: its user; an admin or service key: the user in
``X-Modelbank-User``), hand over, and answer — errors in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``, never problem+json here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelbank.api.deps import Caller, Database
from modelbank.api.errors import status_for
from modelbank.api.guards import Guard
from modelbank.auth.service import Principal, Role
from modelbank.errors import DomainError, InvalidInput
from modelbank.gateway import catalog as gateway_catalog
from modelbank.gateway.service import Gateway, Reply, StreamReply
from modelbank.users.errors import UserNotFound

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body accepted (vision requests carry base64 images)."""

OPENAI_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(
    status: int,
    message: str,
    code: str,
    param: str | None = None,
    route: str | None = None,
    retry_after_s: int | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape (with ``X-Modelbank-Route`` when routing was tried, and
    ``Retry-After`` on a rate limit)."""
    kind = OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    if route is not None:
        headers["X-Modelbank-Route"] = route
    return JSONResponse(body, status_code=status, headers=headers)


GATEWAY_STATUS = {
    "no_route": 503,
    "upstream_unavailable": 502,
    "invalid_input": 400,
    "not_found": 404,
}
"""Statuses of the gateway's own codes (the rest as on ``/api/v1``, 422 answered as 400)."""


def _on_domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    route = getattr(exc, "route_header", None)
    if exc.code == "upstream_rejected":
        status = int(exc.context.get("status") or 400)
        return openai_error(status, exc.message, exc.code, route=route)
    status = GATEWAY_STATUS.get(exc.code) or status_for(exc)
    if status == 422:
        status = 400  # OpenAI answers invalid requests with 400
    retry = exc.context.get("retry_after_s")
    return openai_error(status, exc.message, exc.code, route=route, retry_after_s=retry)


def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return openai_error(
        400,
        f"{where}: {first['msg']}" if where else str(first["msg"]),
        "invalid_request",
        where or None,
    )


def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return openai_error(exc.status_code, str(exc.detail), "http_error")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatRequest(_Open):
    """The fields the gateway reads of a chat completion request; the rest pass through."""

    model: str = Field(min_length=1, max_length=200)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None


class EmbeddingsRequest(_Open):
    """The fields the gateway reads of an embeddings request."""

    model: str = Field(min_length=1, max_length=200)
    input: str | list[Any]


class ImagesRequest(_Open):
    """The fields the gateway reads of an image generation request."""

    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=32_000)
    n: int | None = Field(default=None, ge=1, le=10)


SCHEMAS: dict[str, type[_Open]] = {
    "chat": ChatRequest,
    "embeddings": EmbeddingsRequest,
    "images": ImagesRequest,
}


async def _read_body(request: Request, schema: type[_Open]) -> tuple[dict[str, Any], int]:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise StarletteHTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise StarletteHTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidInput("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    checked = schema.model_validate(body)
    # One reading of the flags for the gateway and the upstream: "stream": "false" (lax
    # JSON) must not be streamed by one and answered whole by the other.
    if "stream" in body:
        if not isinstance(checked, ChatRequest):
            raise InvalidInput("stream is only supported on chat completions", param="stream")
        body["stream"] = bool(checked.stream)
    return body, len(raw)


def _for_user(caller: Principal, acting_for: str | None) -> int:
    if caller.role is Role.USER:
        assert caller.user_id is not None
        if acting_for is not None and acting_for != str(caller.user_id):
            raise UserNotFound(f"no user {acting_for}", user_id=acting_for)
        return caller.user_id
    if acting_for is None or not acting_for.isdigit():
        raise InvalidInput(
            "an admin or service key acts for a user: send X-Modelbank-User: <user id>",
            param="X-Modelbank-User",
        )
    return int(acting_for)


ActingFor = Annotated[
    str | None,
    Header(alias="X-Modelbank-User", description="The user an admin or service key acts for"),
]


class _SettlingStream(StreamingResponse):
    """A streaming response that settles its gateway call when it ends, however it ends
    (the client's disconnect cancels the sending task: settlement runs after it)."""

    def __init__(self, reply: StreamReply, settled: Callable[[int], Awaitable[None]]) -> None:
        super().__init__(reply.events(), media_type="text/event-stream", headers=reply.headers)
        self.reply = reply
        self.settled = settled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.reply.finish()
            used = self.reply.tally.usage
            if used is not None:
                await self.settled(used.input_tokens + used.output_tokens)


def _answer(
    reply: Reply | StreamReply, settled: Callable[[int], Awaitable[None]]
) -> JSONResponse | StreamingResponse:
    if isinstance(reply, StreamReply):
        return _SettlingStream(reply, settled)
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


def _tokens_of(body: dict[str, Any]) -> int:
    """Tokens an answer reports (``usage.total_tokens``, else prompt + completion)."""
    used = body.get("usage")
    if not isinstance(used, dict):
        return 0
    total = used.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return max(total, 0)
    parts = (used.get("prompt_tokens"), used.get("completion_tokens"))
    return sum(p for p in parts if isinstance(p, int) and not isinstance(p, bool) and p > 0)


def create_gateway_app(db: Database, gateway: Gateway) -> FastAPI:
    """The ``/v1`` app over ``gateway``, authenticating through ``db``'s keys."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.db = db
    app.add_exception_handler(DomainError, _on_domain)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_middleware(Guard)  # an unhandled error: problem+json, never a dropped connection

    async def serve(
        endpoint: str, request: Request, caller: Principal, acting_for: str | None
    ) -> JSONResponse | StreamingResponse:
        user_id = _for_user(caller, acting_for)
        if db.limiter is not None:
            await db.check_tokens(caller, user_id)
        body, size = await _read_body(request, SCHEMAS[endpoint])
        reply = await gateway.handle(user_id, endpoint, body, size, caller.limited_key_id)

        async def settled(tokens: int) -> None:
            await db.add_tokens(caller, user_id, tokens)

        if isinstance(reply, Reply) and db.limiter is not None:
            await settled(_tokens_of(reply.body))
        return _answer(reply, settled)

    @app.post("/chat/completions")
    async def chat(request: Request, caller: Caller, acting_for: ActingFor = None) -> Any:
        return await serve("chat", request, caller, acting_for)

    @app.post("/embeddings")
    async def embeddings(request: Request, caller: Caller, acting_for: ActingFor = None) -> Any:
        return await serve("embeddings", request, caller, acting_for)

    @app.post("/images/generations")
    async def images(request: Request, caller: Caller, acting_for: ActingFor = None) -> Any:
        return await serve("images", request, caller, acting_for)

    @app.get("/models")
    async def models(caller: Caller, acting_for: ActingFor = None) -> Any:
        user_id = _for_user(caller, acting_for)

        def read() -> list[dict[str, Any]]:
            with db.read() as session:
                return gateway_catalog.visible_models(session, user_id)

        return {"object": "list", "data": await run_in_threadpool(read)}

    return app
