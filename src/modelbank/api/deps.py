"""What every route depends on: the database, the caller, the idempotency key."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from modelbank.auth import service as auth
from modelbank.auth.service import Principal
from modelbank.config import Settings
from modelbank.errors import InvalidInput
from modelbank.idempotency import service as idempotency
from modelbank.metering import service as metering
from modelbank.metering.service import ChargeResult, UsageEvent
from modelbank.users.errors import UserNotFound

IDEMPOTENCY_HIT = "Idempotency-Hit"


@dataclass
class Database:
    """The app's engine and its two session factories (writes; deferred-read on SQLite)."""

    engine: Engine
    writes: sessionmaker[Session]
    reads: sessionmaker[Session]
    settings: Settings

    async def charge(self, event: UsageEvent) -> ChargeResult:
        """Charge one event in its own transaction, off the event loop. Raises what
        :func:`modelbank.metering.service.charge` raises."""
        return await run_in_threadpool(self._charge, event)

    def _charge(self, event: UsageEvent) -> ChargeResult:
        with self.write() as session:
            return metering.charge(session, event)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: commit on success, roll back on any error."""
        with self.writes() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction (never commits anything)."""
        with self.reads() as session, session.begin():
            yield session

    def idempotent(
        self,
        principal: Principal,
        key: str,
        route: str,
        body: Any,
        run: Callable[[Session], tuple[int, dict[str, Any]]],
    ) -> JSONResponse:
        """Run ``run(session)`` once per (caller, key): it returns (status, JSON body), which
        is stored in the same transaction. The same key and body later get that response
        again with ``Idempotency-Hit: true``; another body gets 409 (DESIGN §12)."""
        fingerprint = idempotency.fingerprint("POST", route, body)
        with self.write() as session:
            stored = idempotency.lookup(session, principal.scope, key, fingerprint)
            if stored is not None:
                return JSONResponse(
                    stored.body, status_code=stored.status_code, headers={IDEMPOTENCY_HIT: "true"}
                )
            status, response = run(session)
            idempotency.store(session, principal.scope, key, fingerprint, status, response)
        return JSONResponse(response, status_code=status, headers={IDEMPOTENCY_HIT: "false"})


def database(request: Request) -> Database:
    """The app's :class:`Database`."""
    db: Database = request.app.state.db
    return db


DB = Annotated[Database, Depends(database)]


def principal(
    db: DB,
    authorization: Annotated[
        str | None, Header(description="`Bearer <API key>`", include_in_schema=False)
    ] = None,
) -> Principal:
    """The caller, from ``Authorization: Bearer <key>``. 401 when missing or invalid."""
    token = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    with db.read() as session:
        return auth.authenticate(session, token)


Caller = Annotated[Principal, Depends(principal)]


def idempotency_key(
    key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=idempotency.MAX_KEY_LENGTH,
            description="Unique per operation (1–200 printable ASCII characters); a retry"
            " with the same key and body returns the first response.",
        ),
    ],
) -> str:
    """The request's ``Idempotency-Key`` header (required on credit-moving POSTs)."""
    return idempotency.check_key(key)


IdemKey = Annotated[str, Depends(idempotency_key)]


def scoped(caller: Principal, user_id: int) -> int:
    """``user_id`` if the caller may act for that user; otherwise 404 (another user's
    resources are not revealed to exist)."""
    if not caller.can_act_for(user_id):
        raise UserNotFound(f"no user {user_id}", user_id=user_id)
    return user_id


def encode_cursor(last_id: int) -> str:
    """An opaque pagination cursor for "after/before this id"."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id inside a cursor; :class:`InvalidInput` for a malformed one."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "id":
            raise ValueError(raw)
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("malformed cursor: pass next_cursor from a previous page") from None
