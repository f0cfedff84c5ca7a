"""Memory of a server under mixed load (issue 16 D12): RSS over time and what grew.

Run by hand::

    .venv/bin/python bench/memory.py [--duration 60] [--threads 4] [--postgres URL] [--json]

Serves the app in this process (uvicorn in a thread, so ``tracemalloc`` sees its
allocations) on a fresh SQLite file (or a fresh PostgreSQL schema), then sends a mix from
``--threads`` clients for ``--duration`` seconds: single usage events (a new key each),
batches of 50, wallet reads, statements (CSV) and usage exports, hold + void pairs. RSS
is sampled every 5 seconds; a ``tracemalloc`` snapshot after warm-up (the first fifth) is
compared with one at the end and the ten lines that grew most are printed. Memory that keeps
growing after warm-up is a leak; memory that rises once and stays is caches and pools.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.db.engine import make_engine, session_factory
from modelbank.db.migrate import upgrade
from modelbank.demo_gateway.servers import serving
from modelbank.secrets import SecretBox
from modelbank.users import service as users
from modelbank.wallets import service as wallets

SAMPLE_S = 5.0
USERS = 20


def rss_mb() -> float:
    """Resident set size now (MiB), from /proc (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _setup(url: str) -> tuple[str, list[int], int]:
    engine = make_engine(url)
    upgrade(engine)
    factory = session_factory(engine)
    with factory() as session, session.begin():
        service = auth.create_key(session, auth.Role.SERVICE, name="memory").secret
        ids = []
        for i in range(USERS):
            info = users.create_user(session, f"mem-{i}")
            wallets.grant(session, info.id, 10**13, idempotency_key=f"mem-seed-{i}")
            ids.append(info.id)
    engine.dispose()
    return service, ids, 0


def _worker(base: str, key: str, ids: list[int], model: int, stop: threading.Event, n: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        i = 0
        while not stop.is_set():
            i += 1
            user = ids[(i + n) % len(ids)]
            step = i % 10
            if step < 5:
                client.post(
                    "/api/v1/usage",
                    json={
                        "user_id": user,
                        "model": model,
                        "input_tokens": 100,
                        "output_tokens": 20,
                        "metadata": {"prompt": "x" * 300, "n": i},
                    },
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
            elif step == 5:
                events = [
                    {
                        "idempotency_key": uuid.uuid4().hex,
                        "user_id": user,
                        "model": model,
                        "input_tokens": 10,
                        "output_tokens": 5,
                    }
                    for _ in range(50)
                ]
                client.post("/api/v1/usage/batch", json={"events": events})
            elif step == 6:
                client.get(f"/api/v1/users/{user}/wallet")
            elif step == 7:
                client.get(f"/api/v1/users/{user}/statement.csv")
            elif step == 8:
                client.get("/api/v1/exports/usage.csv", params={"user_id": user})
            else:
                hold = client.post(
                    f"/api/v1/users/{user}/holds",
                    json={"amount_ucr": 1000, "timeout_s": 60, "model": model},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
                if hold.status_code == 201:
                    client.post(
                        f"/api/v1/holds/{hold.json()['id']}/void",
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    schema = None
    if args.postgres:
        schema = f"mb_mem_{uuid.uuid4().hex[:8]}"
        admin = make_engine(args.postgres)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{args.postgres}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp / 'memory.db'}"
    service, ids, _ = _setup(url)
    app = create_app(load_settings(database_url=url, secret_key=SecretBox.generate_key()))
    from fastapi.testclient import TestClient

    with TestClient(app) as admin_client:
        admin_key = None
        with session_factory(app.state.db.engine)() as session, session.begin():
            admin_key = auth.create_key(session, auth.Role.ADMIN, name="memory admin").secret
        model = admin_client.post(
            "/api/v1/models",
            json={
                "slug": "mem",
                "name": "mem",
                "price": {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 2_000_000},
            },
            headers={"Authorization": f"Bearer {admin_key}"},
        ).json()["id"]
    tracemalloc.start(10)
    samples: list[tuple[float, float]] = []
    with serving(app, "memory") as base:
        stop = threading.Event()
        workers = [
            threading.Thread(target=_worker, args=(base, service, ids, model, stop, n), daemon=True)
            for n in range(args.threads)
        ]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        warm: Any = None
        while (elapsed := time.monotonic() - started) < args.duration:
            time.sleep(SAMPLE_S)
            samples.append((round(elapsed), round(rss_mb(), 1)))
            if warm is None and elapsed >= args.duration / 5:
                warm = tracemalloc.take_snapshot()
        stop.set()
        for worker in workers:
            worker.join(60)
        end = tracemalloc.take_snapshot()
    top = end.compare_to(warm, "lineno")[:10] if warm is not None else []
    report = {
        "rss_mb": samples,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "grew": [str(stat) for stat in top],
    }
    if schema:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    if args.json:
        print(json.dumps(report))
        return
    print("RSS (s, MiB):", samples)
    print("peak RSS MiB:", report["peak_rss_mb"])
    print("grew most after warm-up:")
    for line in report["grew"]:
        print("  ", line)


if __name__ == "__main__":
    main()
