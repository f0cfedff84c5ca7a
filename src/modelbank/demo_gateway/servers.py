"""The demo's servers: ASGI apps served by uvicorn in threads on free loopback ports, and
the three fake upstreams the pool's keys point at (DESIGN §9)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn

from modelbank.errors import DomainError
from modelbank.gateway.fake_upstream import FakeUpstreamConfig

START_TIMEOUT_S = 15.0
"""How long a server may take to start listening."""


class ServerDidNotStart(DomainError):
    """A demo server did not start listening in time. Context: ``name``."""

    code = "demo_server_did_not_start"


@contextmanager
def serving(app: Any, name: str, *, lifespan: Literal["on", "off"] = "on") -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a daemon thread; yield its base
    URL (``http://127.0.0.1:PORT``); stop it (lifespan shutdown included) on exit. Raises
    :class:`ServerDidNotStart` after :data:`START_TIMEOUT_S`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"demo-{name}"
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise ServerDidNotStart(f"the {name} server did not start", name=name)
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@dataclass(frozen=True, slots=True)
class UpstreamRole:
    """One fake upstream of the demo: its name, what it is like, and its behaviour."""

    name: str
    behaviour: str
    config: FakeUpstreamConfig


FLAKY_SEED = 1
"""Seed of the flaky upstream's failure draws: ``random.Random(1)`` draws 0.134 first (below
0.2), so the first chat request to reach the flaky upstream fails and is failed over; which
of its later requests fail is fixed by their arrival order at that upstream."""


def upstream_roles(keys: dict[str, tuple[str, ...]]) -> tuple[UpstreamRole, ...]:
    """The three upstreams, each accepting only its ``keys[name]``: ``steady`` (fast and
    healthy), ``slow`` (250 ms before the headers, 250 ms more to the first token, 200
    tokens/s) and ``flaky`` (fast, but 20 % of requests answer a 500, seeded)."""
    return (
        UpstreamRole(
            "steady",
            "healthy: 5 ms to headers, 10 ms to first token, 2,000 tokens/s",
            FakeUpstreamConfig(
                latency_ms=5, ttft_ms=10, tokens_per_s=2_000, api_keys=keys["steady"]
            ),
        ),
        UpstreamRole(
            "slow",
            "slow: 250 ms to headers, 250 ms more to first token, 200 tokens/s",
            FakeUpstreamConfig(
                latency_ms=250, ttft_ms=250, tokens_per_s=200, api_keys=keys["slow"]
            ),
        ),
        UpstreamRole(
            "flaky",
            f"flaky: fast, 20 % of requests answer HTTP 500 (seed {FLAKY_SEED})",
            FakeUpstreamConfig(
                latency_ms=5,
                ttft_ms=10,
                tokens_per_s=2_000,
                error_rate=0.2,
                error_kind="500",
                seed=FLAKY_SEED,
                api_keys=keys["flaky"],
            ),
        ),
    )
