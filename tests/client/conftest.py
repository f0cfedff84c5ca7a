"""A live modelbank server for the client tests: the app on a migrated SQLite database,
served by uvicorn on a free loopback port in a thread, with an admin and a service key."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.db.engine import make_engine
from modelbank.ledger import invariants
from tests.api.conftest import TEST_SECRET_KEY


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@dataclass(frozen=True)
class Live:
    url: str
    admin_key: str
    service_key: str


@pytest.fixture(scope="module")
def live(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The server for the module; the ledger invariants must hold when it stops."""
    path = tmp_path_factory.mktemp("client") / "live.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    app = create_app(load_settings(database_url=url, secret_key=TEST_SECRET_KEY), engine=engine)
    with app.state.db.write() as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="client admin").secret
        service = auth.create_key(session, auth.Role.SERVICE, name="client service").secret
    with serving(app) as base:
        yield Live(base, admin, service)
    with app.state.db.read() as session:
        broken = list(invariants.check(session))
    engine.dispose()
    assert broken == [], f"ledger invariants broken: {broken}"
