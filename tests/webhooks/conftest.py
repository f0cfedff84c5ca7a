"""Webhook fixtures: a secret box with a fixed key, a real HTTP receiver on 127.0.0.1 that
verifies Standard Webhooks signatures, an httpx client, and the app with a known secret key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.secrets import SecretBox
from tests.api.conftest import Api, bearer
from tests.conftest import Db

KEY = SecretBox.generate_key()
"""The secret key of every test in this folder."""


@dataclass
class Received:
    """One request the receiver got: its headers, raw body, and whether the signature
    verified with the receiver's secret (``payload`` is the verified JSON)."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    payload: Any = None


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST with the next status of
    ``statuses`` (then ``default``), verifying signatures with ``secret`` when set."""

    url: str
    secret: str | None = None
    statuses: list[int] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        verified, payload = False, None
        if self.secret is not None:
            try:
                payload = Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        with self.lock:
            self.received.append(Received(headers, body, verified, payload))
            return self.statuses.pop(0) if self.statuses else self.default


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver listening on a free port of 127.0.0.1, in a thread."""
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = state[0].handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(Receiver(url=f"http://127.0.0.1:{server.server_port}/hook"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state[0]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(KEY)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """An httpx client that ignores proxy settings of the environment (local receiver)."""
    with httpx.Client(trust_env=False) as c:
        yield c


@pytest.fixture
def webhook_api(db: Db) -> Iterator[Api]:
    """The app on ``db`` with MODELBANK_SECRET_KEY = :data:`KEY` (no key file written)."""
    app = create_app(load_settings(database_url=db.url, secret_key=KEY), engine=db.engine)
    with db.tx() as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="test admin").secret
        service = auth.create_key(session, auth.Role.SERVICE, name="test service").secret
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield Api(test_client, db, bearer(admin), bearer(service))
