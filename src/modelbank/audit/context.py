"""Who is acting: one context variable set at the edge, read by :func:`record`.

The API sets it in its caller dependency (``api/deps.py``: the key id, role, user and the
request id), the CLI for its commands, the Stripe webhook for Stripe's events; anything
else (jobs, scripts, tests) acts as ``system``. Services never take the actor as an
argument: an action is audited however it is reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """The actor of an action: ``kind`` (``admin``, ``service``, ``user`` for API keys;
    ``cli``, ``stripe``, ``system``), the API key id and user id when known, and the
    request id the action belongs to."""

    kind: str
    key_id: int | None = None
    user_id: int | None = None
    request_id: str | None = None


SYSTEM = Actor("system")
"""Whoever acts when nobody said: jobs, scripts, tests."""

_actor: ContextVar[Actor] = ContextVar("modelbank_audit_actor", default=SYSTEM)


def current_actor() -> Actor:
    """The actor of the code running now (:data:`SYSTEM` unless set)."""
    return _actor.get()


def set_actor(actor: Actor) -> None:
    """Make ``actor`` the actor of the current context (an API request's task: FastAPI runs
    the endpoint, and its thread-pool work, in a copy of the context set here)."""
    _actor.set(actor)


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Run a block as ``actor``, then restore the previous one."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)
