"""The gateway demo's run: the catalog, the cast and their deposits through the API, then the
trace replayed through ``/v1`` with the official ``openai`` client (DESIGN §9, §15).

Everything goes through modelbank's public HTTP API except the catalog (created with the
replay's :func:`~modelbank.replay.ensure_models`, as the main demo does) and the first admin
key (created in the database, as ``modelbank`` operators do with ``modelbank keys``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.catalog.costs import CostImport
from modelbank.db.engine import session_factory, transaction
from modelbank.demo_gateway.report import (
    Call,
    CastInfo,
    DemoResource,
    GatewayReport,
    collect,
)
from modelbank.demo_gateway.servers import serving, upstream_roles
from modelbank.errors import DomainError, InvalidInput
from modelbank.gateway.fake_upstream import create_app as create_fake
from modelbank.gateway.fake_upstream import prompt_text_for
from modelbank.money import UCR_PER_CREDIT
from modelbank.pool import suspension
from modelbank.replay import CatalogEntry, chat_catalog, ensure_models
from modelbank.traces.assign import Assigner
from modelbank.traces.readers import TraceRequest

if TYPE_CHECKING:
    import openai
    from sqlalchemy import Engine

    from modelbank.config import Settings

DEFAULT_EVENTS = 1_000
"""Trace requests replayed by default: about 45 s on a loaded 2-core machine (25 s of it
the replay itself)."""
PROMPT_CAP_TOKENS = 4_096
"""Longest prompt sent (tokens): longer trace prompts (15 % of the Azure code trace, up to
7,437 tokens) are cut to this, so a request body stays near 16 KB. Completions are never cut."""
MIN_PROMPT_TOKENS = 7
"""Shortest prompt the fake upstream can count exactly with a non-empty message."""
WORKERS = 8
"""Concurrent callers (threads, each a blocking ``openai`` call)."""
STREAM_EVERY = 3
"""Every third request is streamed (``stream=True``)."""
MODELS = 4
"""Chat models in the demo's catalog (the first of the replay's preferred list)."""
CALLERS = tuple(f"caller-{i:02d}" for i in range(1, 13))
"""Users who send the trace's requests, most active first (Zipf rank order)."""
TRIAL_CALLERS = frozenset({"caller-04", "caller-09"})
"""Callers on a trial balance too small for any request: their calls are refused (402)."""
CALLER_CREDITS = 200
"""Purchased credits of every other caller."""
TRIAL_UCR = 10_000
"""A trial caller's balance (0.01 credit)."""
DEPOSITS = (("dep-lena", "slow", 5_000_000), ("dep-omar", "flaky", 5_000_000),
            ("dep-kim", "steady", 3_000_000))  # fmt: skip
"""Users who deposit a key: (name, upstream, quota in µUSD). Each earns 90 % of the quota's
credit value as a deposit grant; the platform keeps 10 % as fees."""
PLATFORM_QUOTA_UUSD = 20_000_000
"""The operator's own key on the steady upstream (a platform resource, no deposit credit)."""


RETIRED = "gateway demo ended: its fake upstream stopped with it"
"""Why the demo's resources are suspended when it ends: a later run or ``modelbank serve`` on
the same database must not route to upstreams that are gone (suspension keeps the deposit
credit; withdrawal would claw it back)."""


class OpenAIClientMissing(DomainError):
    """The official ``openai`` package is not installed (``pip install 'modelbank[demo]'``)."""

    code = "openai_client_missing"


class DemoSetupFailed(DomainError):
    """modelbank refused a step of the demo's setup. Context: ``step``, ``status``."""

    code = "demo_setup_failed"


@dataclass
class _Api:
    """modelbank's HTTP API as the demo's operator (an admin key) calls it."""

    http: httpx.Client
    tag: str

    def post(self, step: str, path: str, body: dict[str, Any], *, key: str | None = None) -> Any:
        headers = {"Idempotency-Key": f"{self.tag}:{key}"} if key else {}
        r = self.http.post(path, json=body, headers=headers)
        if r.status_code not in (200, 201):
            raise DemoSetupFailed(
                f"{step}: HTTP {r.status_code} {r.text[:200]}", step=step, status=r.status_code
            )
        return r.json()

    def user(self, name: str, credits_ucr: int) -> tuple[int, str]:
        """A user (external id ``name@tag``) with a user key and purchased credits."""
        body = {"external_id": f"{name}@{self.tag}"}
        user_id = int(self.post("user", "/api/v1/users", body)["id"])
        secret = str(self.post("key", f"/api/v1/users/{user_id}/keys", {})["key"])
        if credits_ucr:
            grant = {"amount_ucr": credits_ucr, "source": "purchased"}
            self.post("grant", f"/api/v1/users/{user_id}/grants", grant, key=f"grant-{name}")
        return user_id, secret

    def resource(self, path: str, name: str, base_url: str, api_key: str, quota_uusd: int,
                 models: Sequence[str]) -> dict[str, Any]:  # fmt: skip
        """Deposit ``api_key`` (probed by modelbank before it is active)."""
        body = {
            "provider": "fake",
            "base_url": f"{base_url}/v1",
            "api_key": api_key,
            "models": [{"model": m, "upstream_model": m} for m in models],
            "quota_uusd": quota_uusd,
        }
        out = dict(self.post("deposit", path, body, key=f"deposit-{name}"))
        if out["status"] != "active":
            raise DemoSetupFailed(f"deposit of {name}: {out['status']}", step="deposit", status=0)
        return out


@dataclass
class _Plan:
    """What the replay sends: per trace request, the caller, model, prompt and output tokens."""

    calls: list[tuple[str, str, int, int, bool]] = field(default_factory=list)
    capped: int = 0


def plan(requests: Sequence[TraceRequest], models: Sequence[str], seed: int) -> _Plan:
    """Callers and models assigned with the replay's Zipf :class:`Assigner` (same seed, same
    assignment), prompts capped at :data:`PROMPT_CAP_TOKENS`, every
    :data:`STREAM_EVERY`-th request streamed."""
    assigner = Assigner(list(CALLERS), list(models), seed=seed)
    out = _Plan()
    for index, request in enumerate(requests):
        user, model = assigner.assign(index, request)
        prompt = max(request.input_tokens, MIN_PROMPT_TOKENS)
        if prompt > PROMPT_CAP_TOKENS:
            prompt = PROMPT_CAP_TOKENS
            out.capped += 1
        stream = index % STREAM_EVERY == STREAM_EVERY - 1
        out.calls.append((user, model, prompt, max(request.output_tokens, 1), stream))
    return out


def call_once(
    client: openai.OpenAI, model: str, prompt_tokens: int, max_tokens: int, stream: bool
) -> Call:
    """One chat completion through the gateway; its outcome as the client saw it: ``served``,
    ``refused`` (HTTP 402) or ``failed`` (any other error)."""
    import openai

    messages: Any = [{"role": "user", "content": prompt_text_for(prompt_tokens)}]
    start = time.perf_counter()
    try:
        if stream:
            chunks = client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, stream=True
            )
            for _ in chunks:
                pass
        else:
            client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
    except openai.APIStatusError as exc:
        outcome = "refused" if exc.status_code == 402 else "failed"
        return Call(outcome, stream, time.perf_counter() - start, exc.status_code)
    except openai.APIError:
        return Call("failed", stream, time.perf_counter() - start, None)
    return Call("served", stream, time.perf_counter() - start, 200)


def _setup_cast(api: _Api, urls: dict[str, str], keys: dict[str, tuple[str, ...]],
                models: Sequence[str]) -> tuple[CastInfo, dict[str, str]]:  # fmt: skip
    """Callers with credits, depositors with their deposits, the platform's key."""
    cast = CastInfo()
    secrets_of: dict[str, str] = {}
    for name in CALLERS:
        credits = TRIAL_UCR if name in TRIAL_CALLERS else CALLER_CREDITS * UCR_PER_CREDIT
        user_id, secret = api.user(name, credits)
        cast.users[name] = user_id
        secrets_of[name] = secret
    out = api.resource("/api/v1/admin/resources", "platform", urls["steady"], keys["steady"][0],
                       PLATFORM_QUOTA_UUSD, models)  # fmt: skip
    cast.resources.append(DemoResource(int(out["id"]), "steady", None))
    for name, upstream, quota in DEPOSITS:
        user_id, _ = api.user(name, 0)
        cast.users[name] = user_id
        key = keys[upstream][-1]
        path = f"/api/v1/users/{user_id}/resources"
        out = api.resource(path, name, urls[upstream], key, quota, models)
        cast.resources.append(DemoResource(int(out["id"]), upstream, name))
    return cast, secrets_of


def _replay(url: str, secrets_of: dict[str, str], todo: _Plan, workers: int,
            on_call: Callable[[], None]) -> list[Call]:  # fmt: skip
    import openai

    clients = {
        name: openai.OpenAI(base_url=f"{url}/v1", api_key=s, max_retries=0, timeout=120)
        for name, s in secrets_of.items()
    }
    lock = threading.Lock()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-call") as pool:
            futures = [
                pool.submit(call_once, clients[user], model, prompt, out, stream)
                for user, model, prompt, out, stream in todo.calls
            ]
            calls: list[Call] = []
            for future in as_completed(futures):
                calls.append(future.result())
                with lock:
                    on_call()
    finally:
        for client in clients.values():
            client.close()
    return calls


def run_gateway_demo(
    settings: Settings,
    engine: Engine,
    requests: Sequence[TraceRequest],
    costs: CostImport,
    *,
    seed: int = 0,
    workers: int = WORKERS,
    on_call: Callable[[], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> GatewayReport:
    """Run the demo on a migrated database (module docstring) and return its report.

    ``requests``: the trace slice to replay; ``costs``: the price source of the chat catalog
    (:func:`~modelbank.replay.chat_catalog`, :data:`MODELS` models). ``on_call`` is called
    once per finished request (a progress bar), ``on_stage`` with a line per setup step.
    The demo's resources are suspended at the end (:data:`RETIRED`).
    Raises :class:`OpenAIClientMissing`, :class:`DemoSetupFailed` when modelbank refuses a
    setup step, :class:`~modelbank.demo_gateway.servers.ServerDidNotStart`, ``InvalidInput``
    for an empty trace or a worker count below 1."""
    if not requests or workers < 1:
        raise InvalidInput("the gateway demo needs at least one request and one worker")
    try:
        import openai  # noqa: F401  (the callers' client; an optional dependency)
    except ImportError:
        raise OpenAIClientMissing(
            "the gateway demo calls modelbank with the official openai client:"
            " pip install 'modelbank[demo]' (or pip install openai)"
        ) from None
    say = on_stage or (lambda _line: None)
    entries: list[CatalogEntry] = chat_catalog(costs, MODELS)
    models = [e.slug for e in entries]
    factory = session_factory(engine)
    with transaction(factory) as session:
        ensure_models(session, entries, {})
        admin = auth.create_key(session, auth.Role.ADMIN, name="gateway demo").secret
    tag = secrets.token_hex(4)
    keys: dict[str, tuple[str, ...]] = {
        name: (f"sk-demo-{name}-{secrets.token_hex(12)}",) for name in ("slow", "flaky")
    }
    keys["steady"] = (f"sk-demo-steady-{secrets.token_hex(12)}",
                      f"sk-demo-steady2-{secrets.token_hex(12)}")  # fmt: skip
    roles = upstream_roles(keys)
    todo = plan(requests, models, seed)
    with ExitStack() as stack:
        urls = {
            role.name: stack.enter_context(
                serving(create_fake(role.config), role.name, lifespan="off")
            )
            for role in roles
        }
        # the demo's depositors point at its own upstreams on loopback
        local = settings.model_copy(update={"pool_private_upstreams": True})
        app = create_app(local, engine=engine)
        url = stack.enter_context(serving(app, "modelbank"))
        say(f"modelbank at {url}; upstreams: " + ", ".join(f"{k} {v}" for k, v in urls.items()))
        http = stack.enter_context(
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        )
        cast, secrets_of = _setup_cast(_Api(http, tag), urls, keys, models)
        say(f"{len(CALLERS)} callers, {len(DEPOSITS)} deposits and the platform's key ready")
        start = time.perf_counter()
        calls = _replay(url, secrets_of, todo, workers, on_call or (lambda: None))
        elapsed = time.perf_counter() - start
    # servers stopped: the router's write-behind health is flushed, every route log written
    report = collect(
        engine,
        settings,
        cast,
        calls,
        elapsed_s=elapsed,
        roles=roles,
        models=models,
        prompt_capped=todo.capped,
        workers=workers,
    )
    with transaction(factory) as session:
        for resource in cast.resources:
            suspension.suspend(session, resource.id, RETIRED)
    return report
