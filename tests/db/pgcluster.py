"""Throw-away PostgreSQL servers for the replica and PgBouncer tests: a streaming replica made
with ``pg_basebackup -R`` (of the test server when it allows replication connections, else
of a private primary made with ``initdb``), each on a free port in a temporary folder.

Every helper raises :class:`Unavailable` with the precise reason when something cannot be
done here (binaries missing, replication refused and ``initdb`` failing…): the tests skip
with it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"))]
START_TIMEOUT_S = 60


class Unavailable(RuntimeError):
    """The server cannot be started here; the message says why."""


def bin_dir() -> Path:
    """The folder of ``pg_ctl``, ``initdb``, ``pg_basebackup`` and ``postgres``."""
    for folder in BIN_DIRS:
        if all((folder / tool).exists() for tool in ("pg_ctl", "initdb", "pg_basebackup")):
            return folder
    raise Unavailable("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")


def free_port() -> int:
    """A TCP port nobody listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(argv: list[str]) -> list[str]:
    # the server refuses to run as root: run the tools as the postgres user then
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def run(argv: list[str], what: str, timeout: float = 120) -> None:
    """Run a PostgreSQL tool; :class:`Unavailable` with its stderr when it fails."""
    done = subprocess.run(
        _as_postgres(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise Unavailable(f"{what} failed: {(done.stderr or done.stdout).strip()[:400]}")


@dataclass
class Server:
    """A running server of ours: its data folder and port."""

    data: Path
    port: int

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [str(bin_dir() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            ),
            capture_output=True,
            timeout=60,
            check=False,
        )


def _configure(data: Path, port: int, folder: Path, *, primary: bool) -> None:
    conf = data / "postgresql.conf"
    lines = [
        f"port = {port}",
        "listen_addresses = '127.0.0.1'",
        f"unix_socket_directories = '{folder}'",
        "hot_standby = on",
        "fsync = off",
        "max_connections = 50",
        "shared_buffers = 16MB",
    ]
    if primary:
        lines += ["wal_level = replica", "max_wal_senders = 4"]
    with conf.open("a") as f:
        f.write("\n" + "\n".join(lines) + "\n")
    hba = data / "pg_hba.conf"
    rules = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
    if primary:
        rules += "host replication all 127.0.0.1/32 trust\n"
    hba.write_text(rules)
    # Debian keeps these files under /etc: a base backup of its cluster has none of them
    for name in ("pg_ident.conf",):
        (data / name).touch()


def start(data: Path, port: int, folder: Path, *, primary: bool) -> Server:
    """Configure ``data`` for ``port`` and start it (waits until it accepts connections)."""
    _configure(data, port, folder, primary=primary)
    if os.geteuid() == 0:  # the files written here, as root
        for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
            shutil.chown(data / name, "postgres")
    run(
        [
            str(bin_dir() / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / f"{data.name}.log"),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        ],
        f"pg_ctl start of {data.name}",
    )
    return Server(data, port)


def folder() -> Path:
    """A fresh temporary folder the postgres user may write."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="modelbank-pg-"))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")
    return path


def private_primary(where: Path) -> Server:
    """A new cluster (``initdb``) that allows replication connections from 127.0.0.1."""
    data = where / "primary"
    run(
        [
            str(bin_dir() / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        "initdb",
    )
    return start(data, free_port(), where, primary=True)


def replica_of(host: str, port: int, where: Path) -> Server:
    """A streaming replica (hot standby) of the server at ``host:port``:
    ``pg_basebackup -R -X stream`` into ``where``, started on a free port."""
    data = where / "replica"
    run(
        [
            str(bin_dir() / "pg_basebackup"),
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            "postgres",
            "-D",
            str(data),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        ],
        f"pg_basebackup from {host}:{port}",
    )
    return start(data, free_port(), where, primary=False)


def lsn(conn: psycopg.Connection, query: str) -> int:
    """An LSN from ``query`` as an integer (``X/Y`` hex halves)."""
    row = conn.execute(query).fetchone()
    if row is None or row[0] is None:
        return -1
    high, low = str(row[0]).split("/")
    return (int(high, 16) << 32) + int(low, 16)


def wait_replayed(primary_url: str, replica_url: str, timeout_s: float = 20) -> None:
    """Return once the replica has replayed everything the primary had written on entry."""
    with psycopg.connect(primary_url, autocommit=True) as p:
        target = lsn(p, "SELECT pg_current_wal_lsn()")
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(replica_url, autocommit=True) as r:
        while lsn(r, "SELECT pg_last_wal_replay_lsn()") < target:
            if time.monotonic() > deadline:
                raise AssertionError("the replica did not catch up in time")
            time.sleep(0.02)
