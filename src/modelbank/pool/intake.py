"""The deposit flow after registration (DESIGN §9), shared by the API and the dashboard:
probe the key outside any database transaction, then settle the resource in one short
transaction of its own.

Steps of a deposit: :func:`~modelbank.pool.deposits.register` (``pending``, committed by the
caller) → :func:`complete` (probe ``GET {base_url}/models``, then :func:`settle`: activate and
credit the depositor, fail a refused key, or note why it still waits). No lock is held while
the upstream is called. :func:`reprobe` runs the second step again for a resource that is
still pending (its upstream was unreachable), with the key unsealed from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal

import anyio.to_thread
import httpx
from sqlalchemy.orm import Session

from modelbank.money import DEFAULT_CREDITS_PER_USD
from modelbank.pool import keys
from modelbank.pool.deposits import activate, note_probe
from modelbank.pool.lifecycle import fail
from modelbank.pool.probe import ProbeResult, probe
from modelbank.pool.resources import ResourceInfo, get_resource, sealed_key
from modelbank.secrets import SecretBox

Transaction = Callable[[], AbstractContextManager[Session]]
"""Opens one write transaction (commits on success, rolls back on error): ``Database.write``."""


def settle(
    session: Session,
    resource_id: int,
    result: ProbeResult,
    *,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
) -> ResourceInfo:
    """The last step of a deposit, in the caller's transaction: a passed probe activates the
    resource (crediting its depositor, :func:`~modelbank.pool.deposits.activate`); a
    refused key fails it (:func:`~modelbank.pool.lifecycle.fail`, nothing credited); an
    unreachable upstream leaves it ``pending`` with the reason. Returns the resource as it
    now is. Raises :class:`~modelbank.pool.errors.ResourceNotFound`,
    :class:`~modelbank.pool.errors.ResourceState` (it ended meanwhile)."""
    if result.ok:
        return activate(session, resource_id, credits_per_usd=credits_per_usd)
    if result.outcome == "refused":
        return fail(session, resource_id, result.reason)
    note_probe(session, resource_id, result.reason)
    return get_resource(session, resource_id)


async def probe_key(
    base_url: str, api_key: str, *, client: httpx.AsyncClient | None
) -> ProbeResult:
    """:func:`~modelbank.pool.probe.probe` through ``client``, or a fresh client closed
    afterwards when None."""
    if client is not None:
        return await probe(base_url, api_key, client=client)
    async with httpx.AsyncClient() as fresh:
        return await probe(base_url, api_key, client=fresh)


async def complete(
    info: ResourceInfo,
    api_key: str,
    transaction: Transaction,
    *,
    client: httpx.AsyncClient | None = None,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
) -> ResourceInfo:
    """Steps 2–3 of a deposit registered as ``info`` with the plaintext ``api_key``: when it
    is still ``pending``, probe it (no transaction open), then :func:`settle` in one
    transaction from ``transaction`` (run on a worker thread: database calls block).
    Anything else (a replayed deposit that was activated or failed already) is returned
    unchanged, without a probe. Raises what :func:`settle` raises."""
    if info.status != "pending":
        return info
    result = await probe_key(info.base_url, api_key.strip(), client=client)

    def run() -> ResourceInfo:
        with transaction() as session:
            return settle(session, info.id, result, credits_per_usd=credits_per_usd)

    return await anyio.to_thread.run_sync(run)


async def reprobe(
    resource_id: int,
    transaction: Transaction,
    *,
    box: SecretBox,
    client: httpx.AsyncClient | None = None,
    credits_per_usd: Decimal = DEFAULT_CREDITS_PER_USD,
) -> ResourceInfo:
    """Probe a ``pending`` resource again with its stored key (unsealed with ``box``, in
    memory only) and settle it, as :func:`complete` does; the caller checked who may.
    Raises :class:`~modelbank.pool.errors.ResourceNotFound`,
    :class:`~modelbank.secrets.SecretUndecryptable` (the key's secret is gone)."""

    def read() -> tuple[ResourceInfo, str, str]:
        with transaction() as session:
            info = get_resource(session, resource_id)
            token, key_id = sealed_key(session, resource_id)
            return info, token, key_id

    info, token, key_id = await anyio.to_thread.run_sync(read)
    if info.status != "pending":
        return info
    return await complete(
        info,
        keys.reveal(box, token, key_id),
        transaction,
        client=client,
        credits_per_usd=credits_per_usd,
    )


__all__ = ["Transaction", "complete", "probe_key", "reprobe", "settle"]
