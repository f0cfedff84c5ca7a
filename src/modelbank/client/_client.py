"""The sync :class:`Client` and async :class:`AsyncClient`: each API call is written once
(:mod:`modelbank.client._operations`) and bound to both by :class:`endpoint`; the retry loop
is the same in both, around :func:`~modelbank.client._core.retry_delay`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, overload

import httpx

from modelbank.client import _operations as ops
from modelbank.client._core import RETRY_ERRORS, Operation, RetryPolicy, outcome, retry_delay

P = ParamSpec("P")
T = TypeVar("T")

USER_AGENT = "modelbank-client/0.1"


class endpoint(Generic[P, T]):
    """An API call bound to a client: on a :class:`Client` it returns the result, on an
    :class:`AsyncClient` an awaitable of it. ``build`` makes the call's
    :class:`~modelbank.client._core.Operation` from the method's arguments."""

    def __init__(self, build: Callable[P, Operation[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type[Any]) -> endpoint[P, T]: ...

    @overload
    def __get__(self, client: AsyncClient, owner: type[Any]) -> Callable[P, Awaitable[T]]: ...

    @overload
    def __get__(self, client: Client, owner: type[Any]) -> Callable[P, T]: ...

    def __get__(self, client: Any, owner: type[Any]) -> Any:
        if client is None:
            return self
        build = self.build
        if isinstance(client, AsyncClient):

            async def run_async(*args: P.args, **kwargs: P.kwargs) -> T:
                return await client.run(build(*args, **kwargs))

            run_async.__doc__ = build.__doc__
            return run_async

        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            return client.run(build(*args, **kwargs))  # type: ignore[no-any-return]

        run.__doc__ = build.__doc__
        return run


class _Endpoints:
    """The public API, shared by both clients (see each operation's docstring)."""

    healthz = endpoint(ops.healthz)
    # users and keys
    create_user = endpoint(ops.create_user)
    get_user = endpoint(ops.get_user)
    list_users = endpoint(ops.list_users)
    create_user_key = endpoint(ops.create_user_key)
    user_keys = endpoint(ops.user_keys)
    revoke_user_key = endpoint(ops.revoke_user_key)
    create_service_key = endpoint(ops.create_service_key)
    revoke_key = endpoint(ops.revoke_key)
    # wallets
    wallet = endpoint(ops.wallet)
    transfers = endpoint(ops.transfers)
    grant = endpoint(ops.grant)
    grants = endpoint(ops.grants)
    packages = endpoint(ops.packages)
    start_purchase = endpoint(ops.start_purchase)
    purchases = endpoint(ops.purchases)
    get_purchase = endpoint(ops.get_purchase)
    confirm_purchase = endpoint(ops.confirm_purchase)
    refund_purchase = endpoint(ops.refund_purchase)
    place_hold = endpoint(ops.place_hold)
    holds = endpoint(ops.holds)
    get_hold = endpoint(ops.get_hold)
    capture_hold = endpoint(ops.capture_hold)
    void_hold = endpoint(ops.void_hold)
    refund_usage = endpoint(ops.refund_usage)
    low_balance = endpoint(ops.low_balance)
    set_low_balance = endpoint(ops.set_low_balance)
    # models
    list_models = endpoint(ops.list_models)
    get_model = endpoint(ops.get_model)
    create_model = endpoint(ops.create_model)
    purchase_model_access = endpoint(ops.purchase_model_access)
    # usage
    charge = endpoint(ops.charge)
    charge_batch = endpoint(ops.charge_batch)
    # analytics
    earnings = endpoint(ops.earnings)
    model_analytics = endpoint(ops.model_analytics)
    creator_analytics = endpoint(ops.creator_analytics)
    admin_analytics = endpoint(ops.admin_analytics)
    stats = endpoint(ops.stats)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


class Client(_Endpoints):
    """A synchronous modelbank API client.

    ``base_url``: the server's root (``http://127.0.0.1:8000``); ``api_key``: sent as
    ``Authorization: Bearer``. ``retry``: for safe (GET, PUT) and idempotent calls (those
    with an ``Idempotency-Key``, generated when not given, and batches) on connection errors,
    read timeouts, 429 (honouring ``Retry-After``) and 5xx. ``http``: your own
    ``httpx.Client`` (its base URL and auth are then yours to set); ``transport``: an httpx
    transport (tests: ``httpx.MockTransport``). Errors: the typed
    :class:`~modelbank.client.errors.ModelbankError` subclasses; transport errors after the
    retries are httpx's own. Use as a context manager, or :meth:`close`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._own = http is None
        self._http = http or httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._sleep = sleep

    def run(self, op: Operation[T]) -> T:
        """Send ``op`` (retrying as the policy allows) and return its decoded result."""
        retry = 0
        while True:
            try:
                response = self._http.request(
                    op.method, op.path, params=op.params, json=op.json, headers=op.request_headers()
                )
            except RETRY_ERRORS:
                delay = retry_delay(op, self.retry, retry, None)
                if delay is None:
                    raise
            else:
                delay = retry_delay(op, self.retry, retry, response)
                if delay is None:
                    return outcome(op, response)
                response.close()
            self._sleep(delay)
            retry += 1

    def close(self) -> None:
        """Close the HTTP connection pool (not a pool passed in as ``http``)."""
        if self._own:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Endpoints):
    """The asynchronous twin of :class:`Client`: the same methods, awaited; the same
    retries (waiting with ``asyncio.sleep``). ``http``: your own ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._own = http is None
        self._http = http or httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._sleep = sleep

    async def run(self, op: Operation[T]) -> T:
        """Send ``op`` (retrying as the policy allows) and return its decoded result."""
        retry = 0
        while True:
            try:
                response = await self._http.request(
                    op.method, op.path, params=op.params, json=op.json, headers=op.request_headers()
                )
            except RETRY_ERRORS:
                delay = retry_delay(op, self.retry, retry, None)
                if delay is None:
                    raise
            else:
                delay = retry_delay(op, self.retry, retry, response)
                if delay is None:
                    return outcome(op, response)
                await response.aclose()
            await self._sleep(delay)
            retry += 1

    async def aclose(self) -> None:
        """Close the HTTP connection pool (not a pool passed in as ``http``)."""
        if self._own:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()
